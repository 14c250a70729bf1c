"""Latent nodes: empty latents, resizing, compositing, batches, transforms, noise masks, .latent files."""

from __future__ import annotations

import hashlib
import os
from typing import Annotated

import torch

from diffusion import image_ops, latent_io
from engine.errors import PathEscape
from engine.schema import (MAX_RESOLUTION, Boolean, Combo, Float, Hidden, Int, NodeContext, NodeOutput,
                           Output, Socket, String, node)
from nodes.image import save_image_path

_LATENT_METHODS = image_ops.UPSCALE_METHODS_LATENT


def _with(latent: dict, samples: torch.Tensor, **extra) -> dict:
    """A copy of the LATENT dict with new samples (other keys such as noise_mask kept)."""
    out = dict(latent)
    out["samples"] = samples
    out.update(extra)
    return out


@node("EmptyLatentImage", category="latent", display_name="Empty Latent Image",
      outputs=[Output("LATENT", tooltip="The empty latent image batch.")],
      description="Zero latents to start text-to-image from.")
def empty_latent_image(
    width: Annotated[int, Int(default=512, min=16, max=MAX_RESOLUTION, step=8,
                              tooltip="image width in pixels")],
    height: Annotated[int, Int(default=512, min=16, max=MAX_RESOLUTION, step=8,
                               tooltip="image height in pixels")],
    batch_size: Annotated[int, Int(default=1, min=1, max=4096, tooltip="number of latents in the batch")],
):
    """Zeros [batch_size, 4, height//8, width//8]."""
    return {"samples": torch.zeros(batch_size, 4, height // 8, width // 8)}


@node("LatentUpscale", category="latent", display_name="Upscale Latent", outputs=[Output("LATENT")])
def latent_upscale(
    samples: Annotated[dict, Socket("LATENT")],
    upscale_method: Annotated[str, Combo(_LATENT_METHODS)],
    width: Annotated[int, Int(default=512, min=0, max=MAX_RESOLUTION, step=8)],
    height: Annotated[int, Int(default=512, min=0, max=MAX_RESOLUTION, step=8)],
    crop: Annotated[str, Combo(["disabled", "center"])],
):
    """Resize to width//8 × height//8 (0 on one side keeps the aspect; sides at least 64 px)."""
    s = samples["samples"]
    if width == 0 and height == 0:
        return _with(samples, s)
    width, height = image_ops.scaled_size(s.shape[-1] * 8, s.shape[-2] * 8, width, height, minimum=64)
    return _with(samples, image_ops.resize(s, width // 8, height // 8, upscale_method, crop))


@node("LatentUpscaleBy", category="latent", display_name="Upscale Latent By", outputs=[Output("LATENT")])
def latent_upscale_by(
    samples: Annotated[dict, Socket("LATENT")],
    upscale_method: Annotated[str, Combo(_LATENT_METHODS)],
    scale_by: Annotated[float, Float(default=1.5, min=0.01, max=8.0, step=0.01)],
):
    """Resize by ``scale_by`` (rounded latent sizes)."""
    s = samples["samples"]
    width, height = round(s.shape[-1] * scale_by), round(s.shape[-2] * scale_by)
    return _with(samples, image_ops.resize(s, max(1, width), max(1, height), upscale_method))


@node("LatentComposite", category="latent", display_name="Latent Composite", outputs=[Output("LATENT")])
def latent_composite(
    samples_to: Annotated[dict, Socket("LATENT")],
    samples_from: Annotated[dict, Socket("LATENT")],
    x: Annotated[int, Int(default=0, min=0, max=MAX_RESOLUTION, step=8)],
    y: Annotated[int, Int(default=0, min=0, max=MAX_RESOLUTION, step=8)],
    feather: Annotated[int, Int(default=0, min=0, max=MAX_RESOLUTION, step=8)],
):
    """Paste samples_from at (x//8, y//8), feathering edges that lie inside the target."""
    out = image_ops.paste_feathered(samples_to["samples"], samples_from["samples"],
                                    x // 8, y // 8, feather // 8)
    return _with(samples_to, out)


@node("LatentCompositeMasked", category="latent", display_name="LatentCompositeMasked",
      python_module="comfy_extras.nodes_mask", v3=True, outputs=[Output("LATENT")])
def latent_composite_masked(
    destination: Annotated[dict, Socket("LATENT")],
    source: Annotated[dict, Socket("LATENT")],
    x: Annotated[int, Int(default=0, min=0, max=MAX_RESOLUTION, step=8)],
    y: Annotated[int, Int(default=0, min=0, max=MAX_RESOLUTION, step=8)],
    resize_source: Annotated[bool, Boolean(default=False)],
    mask: Annotated[torch.Tensor, Socket("MASK", optional=True)] = None,
):
    """Paste source at (x//8, y//8) through the optional mask."""
    out = image_ops.paste_masked(destination["samples"], source["samples"], x // 8, y // 8, mask,
                                 resize_source)
    return _with(destination, out)


@node("LatentBlend", category="_for_testing", display_name="Latent Blend", outputs=[Output("LATENT")])
def latent_blend(
    samples1: Annotated[dict, Socket("LATENT")],
    samples2: Annotated[dict, Socket("LATENT")],
    blend_factor: Annotated[float, Float(default=0.5, min=0, max=1, step=0.01)],
):
    """``samples1·f + samples2·(1−f)``; samples2 fitted to samples1 (bicubic, centre) if needed."""
    s1, s2 = samples1["samples"], samples2["samples"]
    if s1.shape != s2.shape:
        s2 = image_ops.resize(s2, s1.shape[-1], s1.shape[-2], "bicubic", "center")
    return _with(samples1, s1 * blend_factor + s2 * (1 - blend_factor))


def _masks_for_batch(latent: dict) -> torch.Tensor:
    """The noise mask extended (repeated) to the latent's batch size."""
    return image_ops.repeat_to_batch(latent["noise_mask"], max(latent["samples"].shape[0],
                                                               latent["noise_mask"].shape[0]))


@node("LatentFromBatch", category="latent/batch", display_name="Latent From Batch",
      outputs=[Output("LATENT")])
def latent_from_batch(
    samples: Annotated[dict, Socket("LATENT")],
    batch_index: Annotated[int, Int(default=0, min=0, max=63)],
    length: Annotated[int, Int(default=1, min=1, max=64)],
):
    """Entries ``batch_index … +length`` (clamped); batch_index recorded so noise matches the full batch."""
    s = samples["samples"]
    start = min(s.shape[0] - 1, batch_index)
    length = min(s.shape[0] - start, length)
    out = _with(samples, s[start:start + length].clone())
    if "noise_mask" in samples:
        masks = samples["noise_mask"]
        out["noise_mask"] = masks.clone() if masks.shape[0] == 1 else \
            _masks_for_batch(samples)[start:start + length].clone()
    indices = samples.get("batch_index", list(range(s.shape[0])))
    out["batch_index"] = list(indices[start:start + length])
    return out


@node("RepeatLatentBatch", category="latent/batch", display_name="Repeat Latent Batch",
      outputs=[Output("LATENT")])
def repeat_latent_batch(
    samples: Annotated[dict, Socket("LATENT")],
    amount: Annotated[int, Int(default=1, min=1, max=64)],
):
    """The batch repeated ``amount`` times (noise masks and batch_index extended to match)."""
    s = samples["samples"]
    out = _with(samples, s.repeat(amount, 1, 1, 1))
    if "noise_mask" in samples and samples["noise_mask"].shape[0] > 1:
        masks = _masks_for_batch(samples)[:s.shape[0]]
        out["noise_mask"] = masks.repeat((amount,) + (1,) * (masks.dim() - 1))
    if "batch_index" in samples:
        indices = list(samples["batch_index"])
        offset = max(indices) - min(indices) + 1
        out["batch_index"] = indices + [i + k * offset for k in range(1, amount) for i in indices]
    return out


@node("LatentBatch", category="latent/batch", display_name="LatentBatch",
      python_module="comfy_extras.nodes_latent", v3=True, deprecated=True, outputs=[Output("LATENT")])
def latent_batch(
    samples1: Annotated[dict, Socket("LATENT")],
    samples2: Annotated[dict, Socket("LATENT")],
):
    """Concatenate two batches (the second resized to the first's size)."""
    s1, s2 = samples1["samples"], samples2["samples"]
    if s1.shape[-2:] != s2.shape[-2:]:
        s2 = image_ops.resize(s2, s1.shape[-1], s1.shape[-2], "bilinear", "center")
    indices = (list(samples1.get("batch_index", range(s1.shape[0])))
               + list(samples2.get("batch_index", range(s2.shape[0]))))
    return _with(samples1, torch.cat([s1, s2], dim=0), batch_index=indices)


_ROTATIONS = {"none": 0, "90 degrees": 1, "180 degrees": 2, "270 degrees": 3}


@node("LatentRotate", category="latent/transform", display_name="Rotate Latent",
      outputs=[Output("LATENT")])
def latent_rotate(
    samples: Annotated[dict, Socket("LATENT")],
    rotation: Annotated[str, Combo(list(_ROTATIONS))],
):
    """Rotate clockwise by 0/90/180/270 degrees."""
    return _with(samples, torch.rot90(samples["samples"], k=_ROTATIONS[rotation], dims=[3, 2]))


@node("LatentFlip", category="latent/transform", display_name="Flip Latent", outputs=[Output("LATENT")])
def latent_flip(
    samples: Annotated[dict, Socket("LATENT")],
    flip_method: Annotated[str, Combo(["x-axis: vertically", "y-axis: horizontally"])],
):
    """Flip rows (x-axis) or columns (y-axis)."""
    dim = 2 if flip_method.startswith("x") else 3
    return _with(samples, torch.flip(samples["samples"], dims=[dim]))


@node("LatentCrop", category="latent/transform", display_name="Crop Latent", outputs=[Output("LATENT")])
def latent_crop(
    samples: Annotated[dict, Socket("LATENT")],
    width: Annotated[int, Int(default=512, min=64, max=MAX_RESOLUTION, step=8)],
    height: Annotated[int, Int(default=512, min=64, max=MAX_RESOLUTION, step=8)],
    x: Annotated[int, Int(default=0, min=0, max=MAX_RESOLUTION, step=8)],
    y: Annotated[int, Int(default=0, min=0, max=MAX_RESOLUTION, step=8)],
):
    """Crop width//8 × height//8 at (x//8, y//8), keeping at least 8 latent pixels."""
    s = samples["samples"]
    x, y = min(x // 8, s.shape[3] - 8), min(y // 8, s.shape[2] - 8)
    return _with(samples, s[:, :, y:y + height // 8, x:x + width // 8])


@node("SetLatentNoiseMask", category="latent/inpaint", display_name="Set Latent Noise Mask",
      outputs=[Output("LATENT")])
def set_latent_noise_mask(
    samples: Annotated[dict, Socket("LATENT")],
    mask: Annotated[torch.Tensor, Socket("MASK")],
):
    """The latent with ``noise_mask`` = mask as [B,1,H,W]."""
    return _with(samples, samples["samples"],
                 noise_mask=mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]))


@node("SaveLatent", category="_for_testing", display_name="SaveLatent", outputs=[], output_node=True,
      description="Saves the latent batch as a .latent file in the output folder.")
def save_latent(
    ctx: NodeContext,
    samples: Annotated[dict, Socket("LATENT")],
    filename_prefix: Annotated[str, String(default="latents/ComfyUI")],
    prompt: Annotated[dict, Hidden("PROMPT")] = None,
    extra_pnginfo: Annotated[dict, Hidden("EXTRA_PNGINFO")] = None,
):
    """Write ``<prefix>_<counter:05>_.latent`` (safetensors) with the prompt in its metadata."""
    folder, filename, counter, subfolder = save_image_path(
        ctx, ctx.paths.output_dir, filename_prefix, 0, 0)
    name = f"{filename}_{counter:05}_.latent"
    meta = None if ctx.config.disable_metadata else latent_io.save_metadata(prompt, extra_pnginfo)
    latent_io.save_latent(os.path.join(folder, name), samples["samples"], meta)
    return NodeOutput(ui={"latents": [{"filename": name, "subfolder": subfolder, "type": "output"}]})


def _latent_files(paths) -> list[str]:
    folder = paths.input_dir
    if not os.path.isdir(folder):
        return []
    return sorted(n for n in os.listdir(folder)
                  if n.endswith(".latent") and os.path.isfile(os.path.join(folder, n)))


def _latent_path(ctx: NodeContext, latent: str) -> str:
    try:
        path = ctx.paths.contained(ctx.paths.input_dir, latent)
    except PathEscape:
        path = None
    if path is None or not os.path.isfile(path):
        raise ValueError(f"Invalid latent file: {latent}")
    return path


def _validate_latent(ctx: NodeContext, latent: str) -> bool | str:
    try:
        _latent_path(ctx, latent)
    except ValueError as exc:
        return str(exc)
    return True


def _latent_hash(ctx: NodeContext, latent: str, **_) -> str:
    with open(_latent_path(ctx, latent), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@node("LoadLatent", category="_for_testing", display_name="LoadLatent", outputs=[Output("LATENT")],
      is_changed=_latent_hash, validate_inputs=_validate_latent)
def load_latent(ctx: NodeContext, latent: Annotated[str, Combo(_latent_files)]):
    """Read a .latent file from the input folder."""
    return {"samples": latent_io.load_latent(_latent_path(ctx, latent))}
