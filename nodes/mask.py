"""Mask nodes: conversions, solid masks, invert, grow/shrink, feather, threshold (nodes.md §5.6)."""

from __future__ import annotations

from typing import Annotated

import torch

from diffusion import image_ops
from engine.schema import MAX_RESOLUTION, Boolean, Combo, Float, Int, Output, Socket, node

_EXTRAS = "comfy_extras.nodes_mask"
_CHANNELS = ["red", "green", "blue", "alpha"]


@node("ImageToMask", category="mask", display_name="Convert Image to Mask", python_module=_EXTRAS,
      v3=True, outputs=[Output("MASK")])
def image_to_mask(
    image: Annotated[torch.Tensor, Socket("IMAGE")],
    channel: Annotated[str, Combo(_CHANNELS, style="combo")],
):
    """One channel of the image as MASK."""
    index = _CHANNELS.index(channel)
    if index >= image.shape[-1]:
        raise ValueError(f"the image has {image.shape[-1]} channels, so it has no {channel} channel")
    return image[..., index]


@node("MaskToImage", category="mask", display_name="Convert Mask to Image", python_module=_EXTRAS,
      v3=True, outputs=[Output("IMAGE")])
def mask_to_image(mask: Annotated[torch.Tensor, Socket("MASK")]):
    """The mask repeated into 3 channels [B,H,W,3]."""
    return image_ops.as_mask_batch(mask)[..., None].repeat(1, 1, 1, 3)


@node("SolidMask", category="mask", display_name="SolidMask", python_module=_EXTRAS, v3=True,
      outputs=[Output("MASK")])
def solid_mask(
    value: Annotated[float, Float(default=1.0, min=0.0, max=1.0, step=0.01)],
    width: Annotated[int, Int(default=512, min=1, max=MAX_RESOLUTION, step=1)],
    height: Annotated[int, Int(default=512, min=1, max=MAX_RESOLUTION, step=1)],
):
    """A [1,H,W] mask filled with ``value``."""
    return torch.full((1, height, width), value, dtype=torch.float32)


@node("InvertMask", category="mask", display_name="InvertMask", python_module=_EXTRAS, v3=True,
      outputs=[Output("MASK")])
def invert_mask(mask: Annotated[torch.Tensor, Socket("MASK")]):
    """``1 − mask``."""
    return 1.0 - mask


@node("GrowMask", category="mask", display_name="Grow Mask", python_module=_EXTRAS, v3=True,
      outputs=[Output("MASK")])
def grow_mask(
    mask: Annotated[torch.Tensor, Socket("MASK")],
    expand: Annotated[int, Int(default=0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION, step=1)],
    tapered_corners: Annotated[bool, Boolean(default=True)],
):
    """Dilate (expand > 0) or erode (< 0) by |expand| pixels."""
    return image_ops.grow_mask(mask, expand, tapered_corners)


@node("FeatherMask", category="mask", display_name="FeatherMask", python_module=_EXTRAS, v3=True,
      outputs=[Output("MASK")])
def feather_mask(
    mask: Annotated[torch.Tensor, Socket("MASK")],
    left: Annotated[int, Int(default=0, min=0, max=MAX_RESOLUTION, step=1)],
    top: Annotated[int, Int(default=0, min=0, max=MAX_RESOLUTION, step=1)],
    right: Annotated[int, Int(default=0, min=0, max=MAX_RESOLUTION, step=1)],
    bottom: Annotated[int, Int(default=0, min=0, max=MAX_RESOLUTION, step=1)],
):
    """Linear fade towards each edge over the given number of pixels."""
    return image_ops.feather_mask(mask, left, top, right, bottom)


@node("ThresholdMask", category="mask", display_name="ThresholdMask", python_module=_EXTRAS, v3=True,
      outputs=[Output("MASK")])
def threshold_mask(
    mask: Annotated[torch.Tensor, Socket("MASK")],
    value: Annotated[float, Float(default=0.5, min=0.0, max=1.0, step=0.01)],
):
    """1 where ``mask > value``, else 0."""
    return (mask > value).float()
