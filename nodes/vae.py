"""VAE nodes: decode, encode, tiled variants, inpainting encodes (nodes.md §5.2, §5.4; sampling.md §7.4)."""

from __future__ import annotations

from typing import Annotated

import torch

from diffusion import image_ops
from engine.schema import Boolean, Int, Output, Socket, node


@node("VAEDecode", category="latent", display_name="VAE Decode",
      outputs=[Output("IMAGE", tooltip="The decoded image.")],
      description="Decodes latents into images with the VAE.")
def vae_decode(
    samples: Annotated[dict, Socket("LATENT", tooltip="latent to decode")],
    vae: Annotated[object, Socket("VAE", tooltip="VAE used for decoding")],
):
    """Latent → IMAGE [B,H,W,3] in 0..1 (video batches flattened)."""
    images = vae.decode(samples["samples"])
    return images.reshape(-1, *images.shape[-3:]) if images.dim() == 5 else images


@node("VAEEncode", category="latent", display_name="VAE Encode", outputs=[Output("LATENT")])
def vae_encode(
    pixels: Annotated[torch.Tensor, Socket("IMAGE")],
    vae: Annotated[object, Socket("VAE")],
):
    """IMAGE → latent; alpha dropped, sides centre-cropped to multiples of 8."""
    return {"samples": vae.encode(image_ops.crop_image_to_multiple(pixels[..., :3]))}


@node("VAEDecodeTiled", category="_for_testing", display_name="VAE Decode (Tiled)",
      outputs=[Output("IMAGE")])
def vae_decode_tiled(
    samples: Annotated[dict, Socket("LATENT")],
    vae: Annotated[object, Socket("VAE")],
    tile_size: Annotated[int, Int(default=512, min=64, max=4096, step=32)],
    overlap: Annotated[int, Int(default=64, min=0, max=4096, step=32)],
    temporal_size: Annotated[int, Int(default=64, min=8, max=4096, step=4,
                                      tooltip="video VAEs only: frames decoded at a time")],
    temporal_overlap: Annotated[int, Int(default=8, min=4, max=4096, step=4,
                                         tooltip="video VAEs only: frame overlap")],
):
    """Decode in overlapping tiles (sizes in pixels); overlap capped at a quarter of the tile."""
    if tile_size < overlap * 4:
        overlap = tile_size // 4
    return vae.decode_tiled(samples["samples"], tile_size, overlap)


@node("VAEEncodeTiled", category="_for_testing", display_name="VAE Encode (Tiled)",
      outputs=[Output("LATENT")])
def vae_encode_tiled(
    pixels: Annotated[torch.Tensor, Socket("IMAGE")],
    vae: Annotated[object, Socket("VAE")],
    tile_size: Annotated[int, Int(default=512, min=64, max=4096, step=64)],
    overlap: Annotated[int, Int(default=64, min=0, max=4096, step=32)],
    temporal_size: Annotated[int, Int(default=64, min=8, max=4096, step=4,
                                      tooltip="video VAEs only: frames encoded at a time")],
    temporal_overlap: Annotated[int, Int(default=8, min=4, max=4096, step=4,
                                         tooltip="video VAEs only: frame overlap")],
):
    """Encode in overlapping tiles (sizes in pixels)."""
    return {"samples": vae.encode_tiled(image_ops.crop_image_to_multiple(pixels[..., :3]), tile_size, overlap)}


@node("VAEEncodeForInpaint", category="latent/inpaint", display_name="VAE Encode (for Inpainting)",
      outputs=[Output("LATENT")])
def vae_encode_for_inpaint(
    pixels: Annotated[torch.Tensor, Socket("IMAGE")],
    vae: Annotated[object, Socket("VAE")],
    mask: Annotated[torch.Tensor, Socket("MASK")],
    grow_mask_by: Annotated[int, Int(default=6, min=0, max=64, step=1)],
):
    """Encode with the masked area grayed out; the noise mask is the rounded mask grown by a box."""
    pixels, mask = image_ops.inpaint_crop(pixels[..., :3], mask)
    samples = vae.encode(image_ops.gray_fill(pixels, mask))
    return {"samples": samples, "noise_mask": image_ops.grow_box(mask, grow_mask_by)}


@node("InpaintModelConditioning", category="conditioning/inpaint", display_name="InpaintModelConditioning",
      outputs=[Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"),
               Output("LATENT", "latent")])
def inpaint_model_conditioning(
    positive: Annotated[list, Socket("CONDITIONING")],
    negative: Annotated[list, Socket("CONDITIONING")],
    vae: Annotated[object, Socket("VAE")],
    pixels: Annotated[torch.Tensor, Socket("IMAGE")],
    mask: Annotated[torch.Tensor, Socket("MASK")],
    noise_mask: Annotated[bool, Boolean(
        default=True, tooltip="also set a noise mask so sampling only changes the masked area")],
):
    """Attach the gray-filled image's latent and the mask to both conditionings (inpaint models)."""
    cropped, mask = image_ops.inpaint_crop(pixels[..., :3], mask)
    concat_latent = vae.encode(image_ops.gray_fill(cropped, mask))
    latent = {"samples": vae.encode(cropped)}
    if noise_mask:
        latent["noise_mask"] = mask
    extra = {"concat_latent_image": concat_latent, "concat_mask": mask}
    pos = [[t, {**d, **extra}] for t, d in positive]
    neg = [[t, {**d, **extra}] for t, d in negative]
    return pos, neg, latent
