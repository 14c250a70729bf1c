"""Conditioning nodes: text encoding, CLIP skip, combining and annotating conditionings (nodes.md §5.2)."""

from __future__ import annotations

from typing import Annotated

import torch

from diffusion.embeddings import EmbeddingLookup
from engine.schema import MAX_RESOLUTION, Combo, Float, Int, NodeContext, Output, Socket, String, node

_NO_CLIP = ("clip input is invalid: None\n\nIf the clip is from a checkpoint loader node your checkpoint "
            "does not contain a valid clip or text encoder model.")


def _embeddings(ctx: NodeContext) -> EmbeddingLookup:
    return EmbeddingLookup(ctx.paths.folder_paths("embeddings"))


def _check_clip(clip) -> None:
    if clip is None:
        raise RuntimeError(_NO_CLIP)


def _set(conditioning: list, **values) -> list:
    """A copy of the conditioning with ``values`` set on every entry's options (inputs untouched)."""
    return [[t, {**d, **values}] for t, d in conditioning]


@node("CLIPTextEncode", category="conditioning", display_name="CLIP Text Encode (Prompt)",
      outputs=[Output("CONDITIONING", tooltip="The encoded prompt, to steer the diffusion model.")],
      description="Encodes a prompt (with weights and embedding:name syntax) with the text encoder.")
def clip_text_encode(
    ctx: NodeContext,
    text: Annotated[str, String(multiline=True, dynamic_prompts=True, tooltip="prompt text to encode")],
    clip: Annotated[object, Socket("CLIP", tooltip="text encoder to use")],
):
    """``[[cond, {"pooled_output": pooled}]]``."""
    _check_clip(clip)
    cond, pooled = clip.encode(text, _embeddings(ctx), ctx.warn)
    return [[cond, {"pooled_output": pooled}]]


@node("CLIPSetLastLayer", category="conditioning", display_name="CLIP Set Last Layer", outputs=[Output("CLIP")])
def clip_set_last_layer(
    clip: Annotated[object, Socket("CLIP")],
    stop_at_clip_layer: Annotated[int, Int(default=-1, min=-24, max=-1, step=1)],
):
    """A clone of the CLIP that stops at hidden layer ``stop_at_clip_layer`` (-2 = clip skip 2)."""
    clip = clip.clone()
    clip.set_layer(stop_at_clip_layer)
    return clip


_SDXL = "comfy_extras.nodes_clip_sdxl"


@node("CLIPTextEncodeSDXL", category="advanced/conditioning", display_name="CLIPTextEncodeSDXL",
      python_module=_SDXL, v3=True, outputs=[Output("CONDITIONING")])
def clip_text_encode_sdxl(
    ctx: NodeContext,
    clip: Annotated[object, Socket("CLIP")],
    width: Annotated[int, Int(default=1024, min=0, max=MAX_RESOLUTION)],
    height: Annotated[int, Int(default=1024, min=0, max=MAX_RESOLUTION)],
    crop_w: Annotated[int, Int(default=0, min=0, max=MAX_RESOLUTION)],
    crop_h: Annotated[int, Int(default=0, min=0, max=MAX_RESOLUTION)],
    target_width: Annotated[int, Int(default=1024, min=0, max=MAX_RESOLUTION)],
    target_height: Annotated[int, Int(default=1024, min=0, max=MAX_RESOLUTION)],
    text_g: Annotated[str, String(multiline=True, dynamic_prompts=True)],
    text_l: Annotated[str, String(multiline=True, dynamic_prompts=True)],
):
    """SDXL base encode (text_g → CLIP-G, text_l → CLIP-L) plus the size conditioning."""
    _check_clip(clip)
    cond, pooled = clip.encode_sdxl(text_g, text_l, _embeddings(ctx), ctx.warn)
    return [[cond, {"pooled_output": pooled, "width": width, "height": height, "crop_w": crop_w,
                    "crop_h": crop_h, "target_width": target_width, "target_height": target_height}]]


@node("CLIPTextEncodeSDXLRefiner", category="advanced/conditioning", display_name="CLIPTextEncodeSDXLRefiner",
      python_module=_SDXL, v3=True, outputs=[Output("CONDITIONING")])
def clip_text_encode_sdxl_refiner(
    ctx: NodeContext,
    ascore: Annotated[float, Float(default=6.0, min=0.0, max=1000.0, step=0.01)],
    width: Annotated[int, Int(default=1024, min=0, max=MAX_RESOLUTION)],
    height: Annotated[int, Int(default=1024, min=0, max=MAX_RESOLUTION)],
    text: Annotated[str, String(multiline=True, dynamic_prompts=True)],
    clip: Annotated[object, Socket("CLIP")],
):
    """SDXL refiner encode plus aesthetic score and size."""
    _check_clip(clip)
    cond, pooled = clip.encode(text, _embeddings(ctx), ctx.warn)
    return [[cond, {"pooled_output": pooled, "aesthetic_score": ascore, "width": width, "height": height}]]


@node("ConditioningCombine", category="conditioning", display_name="Conditioning (Combine)",
      outputs=[Output("CONDITIONING")])
def conditioning_combine(
    conditioning_1: Annotated[list, Socket("CONDITIONING")],
    conditioning_2: Annotated[list, Socket("CONDITIONING")],
):
    """Both lists' entries (each evaluated and weighted during sampling)."""
    return conditioning_1 + conditioning_2


@node("ConditioningConcat", category="conditioning", display_name="Conditioning (Concat)",
      outputs=[Output("CONDITIONING")])
def conditioning_concat(
    ctx: NodeContext,
    conditioning_to: Annotated[list, Socket("CONDITIONING")],
    conditioning_from: Annotated[list, Socket("CONDITIONING")],
):
    """Append the first ``from`` entry's tokens to every ``to`` entry (token axis)."""
    if len(conditioning_from) > 1:
        ctx.warn("ConditioningConcat: conditioning_from has more than one entry; only the first is used.")
    extra = conditioning_from[0][0]
    return [[torch.cat([t, extra.to(t)], dim=1), dict(d)] for t, d in conditioning_to]


@node("ConditioningAverage", category="conditioning", display_name="ConditioningAverage",
      outputs=[Output("CONDITIONING")])
def conditioning_average(
    ctx: NodeContext,
    conditioning_to: Annotated[list, Socket("CONDITIONING")],
    conditioning_from: Annotated[list, Socket("CONDITIONING")],
    conditioning_to_strength: Annotated[float, Float(default=1.0, min=0.0, max=1.0, step=0.01)],
):
    """``to·s + from·(1−s)`` for tokens (from truncated/zero-padded) and pooled outputs."""
    if len(conditioning_from) > 1:
        ctx.warn("ConditioningAverage: conditioning_from has more than one entry; only the first is used.")
    s = conditioning_to_strength
    t_from, d_from = conditioning_from[0]
    pooled_from = d_from.get("pooled_output")
    out = []
    for t_to, d_to in conditioning_to:
        t1 = t_from[:, :t_to.shape[1]]
        if t1.shape[1] < t_to.shape[1]:
            t1 = torch.cat([t1, torch.zeros(t1.shape[0], t_to.shape[1] - t1.shape[1], t1.shape[2],
                                            dtype=t1.dtype)], dim=1)
        d = dict(d_to)
        if pooled_from is not None:
            pooled_to = d_to.get("pooled_output")
            pooled_to = pooled_from if pooled_to is None else pooled_to
            d["pooled_output"] = pooled_to * s + pooled_from * (1.0 - s)
        out.append([t_to * s + t1.to(t_to) * (1.0 - s), d])
    return out


@node("ConditioningSetArea", category="conditioning", display_name="Conditioning (Set Area)",
      outputs=[Output("CONDITIONING")])
def conditioning_set_area(
    conditioning: Annotated[list, Socket("CONDITIONING")],
    width: Annotated[int, Int(default=64, min=64, max=MAX_RESOLUTION, step=8)],
    height: Annotated[int, Int(default=64, min=64, max=MAX_RESOLUTION, step=8)],
    x: Annotated[int, Int(default=0, min=0, max=MAX_RESOLUTION, step=8)],
    y: Annotated[int, Int(default=0, min=0, max=MAX_RESOLUTION, step=8)],
    strength: Annotated[float, Float(default=1.0, min=0.0, max=10.0, step=0.01)],
):
    """Restrict to an area in latent units ``(h//8, w//8, y//8, x//8)`` with a strength."""
    return _set(conditioning, area=(height // 8, width // 8, y // 8, x // 8), strength=strength,
                set_area_to_bounds=False)


@node("ConditioningSetAreaPercentage", category="conditioning",
      display_name="Conditioning (Set Area with Percentage)", outputs=[Output("CONDITIONING")])
def conditioning_set_area_percentage(
    conditioning: Annotated[list, Socket("CONDITIONING")],
    width: Annotated[float, Float(default=1.0, min=0, max=1.0, step=0.01)],
    height: Annotated[float, Float(default=1.0, min=0, max=1.0, step=0.01)],
    x: Annotated[float, Float(default=0, min=0, max=1.0, step=0.01)],
    y: Annotated[float, Float(default=0, min=0, max=1.0, step=0.01)],
    strength: Annotated[float, Float(default=1.0, min=0.0, max=10.0, step=0.01)],
):
    """Restrict to an area given as fractions of the image."""
    return _set(conditioning, area=("percentage", height, width, y, x), strength=strength,
                set_area_to_bounds=False)


@node("ConditioningSetAreaStrength", category="conditioning", display_name="ConditioningSetAreaStrength",
      outputs=[Output("CONDITIONING")])
def conditioning_set_area_strength(
    conditioning: Annotated[list, Socket("CONDITIONING")],
    strength: Annotated[float, Float(default=1.0, min=0.0, max=10.0, step=0.01)],
):
    """Set the strength only."""
    return _set(conditioning, strength=strength)


@node("ConditioningSetMask", category="conditioning", display_name="Conditioning (Set Mask)",
      outputs=[Output("CONDITIONING")])
def conditioning_set_mask(
    conditioning: Annotated[list, Socket("CONDITIONING")],
    mask: Annotated[torch.Tensor, Socket("MASK")],
    strength: Annotated[float, Float(default=1.0, min=0.0, max=10.0, step=0.01)],
    set_cond_area: Annotated[str, Combo(["default", "mask bounds"])],
):
    """Restrict to a mask with a strength (optionally to the mask's bounding box)."""
    if mask.dim() < 3:
        mask = mask.unsqueeze(0)
    return _set(conditioning, mask=mask, set_area_to_bounds=set_cond_area != "default",
                mask_strength=strength)


@node("ConditioningSetTimestepRange", category="advanced/conditioning",
      display_name="ConditioningSetTimestepRange", outputs=[Output("CONDITIONING")])
def conditioning_set_timestep_range(
    conditioning: Annotated[list, Socket("CONDITIONING")],
    start: Annotated[float, Float(default=0.0, min=0.0, max=1.0, step=0.001)],
    end: Annotated[float, Float(default=1.0, min=0.0, max=1.0, step=0.001)],
):
    """Active only between ``start`` and ``end`` of the schedule."""
    return _set(conditioning, start_percent=start, end_percent=end)


@node("ConditioningZeroOut", category="advanced/conditioning", display_name="ConditioningZeroOut",
      outputs=[Output("CONDITIONING")])
def conditioning_zero_out(conditioning: Annotated[list, Socket("CONDITIONING")]):
    """Tokens and pooled output replaced by zeros of the same shape."""
    out = []
    for t, d in conditioning:
        d = dict(d)
        if d.get("pooled_output") is not None:
            d["pooled_output"] = torch.zeros_like(d["pooled_output"])
        out.append([torch.zeros_like(t), d])
    return out
