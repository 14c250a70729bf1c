"""Loader nodes: checkpoints, VAEs, standalone text encoders and diffusion models (nodes.md §5.1)."""

from __future__ import annotations

from typing import Annotated

import torch

from diffusion import devices, loading
from diffusion.keymaps.clip import openclip_to_hf, to_checkpoint
from diffusion.models.text_encoders import clip_from_state_dict
from engine.schema import Combo, NodeContext, Output, files_in, node

_CLIP_WIDTH_SD2 = 1024  # OpenCLIP ViT-H: a standalone "stable_diffusion" encoder of this width is SD2's


@node("CheckpointLoaderSimple", category="loaders", display_name="Load Checkpoint",
      outputs=[Output("MODEL", tooltip="The diffusion model that denoises latents."),
               Output("CLIP", tooltip="The text encoder(s) that turn prompts into conditioning."),
               Output("VAE", tooltip="The VAE that converts between images and latents.")],
      description="Loads a checkpoint file: the diffusion model, its text encoder(s) and its VAE.")
def checkpoint_loader_simple(
    ctx: NodeContext,
    ckpt_name: Annotated[str, Combo(files_in("checkpoints"), tooltip="checkpoint file to load")],
):
    """(MODEL, CLIP, VAE) of a single-file checkpoint; CLIP is None when the file has no text encoder."""
    return loading.load_checkpoint(ctx.paths.full_path("checkpoints", ckpt_name), config=ctx.config)


@node("VAELoader", category="loaders", display_name="Load VAE", outputs=[Output("VAE")])
def vae_loader(ctx: NodeContext, vae_name: Annotated[str, Combo(files_in("vae"))]):
    """A standalone VAE file (LDM or diffusers layout)."""
    return loading.load_vae(ctx.paths.full_path("vae", vae_name), config=ctx.config)


def _text_encoder_weights(path: str) -> dict[str, torch.Tensor]:
    """A standalone text-encoder file's weights with Hugging Face CLIP names."""
    sd = loading.read_state_dict(path)
    if any(k.startswith("transformer.resblocks.") for k in sd):
        sd = openclip_to_hf(sd)
    sd.pop("text_model.embeddings.position_ids", None)
    return sd


def _build_clip(ctx: NodeContext, encoders: dict[str, dict], family: str, device: str):
    """A ClipHandle from HF-named encoder weights, via the family's checkpoint layout."""
    force = ctx.config.force_fp32 or ctx.config.fp32_text_enc
    load_device = "cpu" if device == "cpu" else devices.compute_device(ctx.config)
    return clip_from_state_dict(to_checkpoint(encoders, family), family,
                                torch.float32 if force else torch.float16, load_device=load_device)


def _width(weights: dict) -> int:
    return weights["text_model.embeddings.token_embedding.weight"].shape[1]


@node("CLIPLoader", category="advanced/loaders", display_name="Load CLIP", outputs=[Output("CLIP")],
      description="Loads a standalone text encoder file.")
def clip_loader(
    ctx: NodeContext,
    clip_name: Annotated[str, Combo(files_in("text_encoders"))],
    type: Annotated[str, Combo(["stable_diffusion"])],
    device: Annotated[str, Combo(["default", "cpu"], advanced=True, optional=True)] = "default",
):
    """A CLIP-L (SD1) or OpenCLIP-H (SD2) text encoder file as CLIP."""
    weights = _text_encoder_weights(ctx.paths.full_path("text_encoders", clip_name))
    if _width(weights) == _CLIP_WIDTH_SD2:
        return _build_clip(ctx, {"clip_h": weights}, "sd2", device)
    return _build_clip(ctx, {"clip_l": weights}, "sd1", device)


@node("DualCLIPLoader", category="advanced/loaders", display_name="DualCLIPLoader", outputs=[Output("CLIP")],
      description="Loads two text encoder files used together (SDXL: CLIP-L and CLIP-G).")
def dual_clip_loader(
    ctx: NodeContext,
    clip_name1: Annotated[str, Combo(files_in("text_encoders"))],
    clip_name2: Annotated[str, Combo(files_in("text_encoders"))],
    type: Annotated[str, Combo(["sdxl"])],
    device: Annotated[str, Combo(["default", "cpu"], advanced=True, optional=True)] = "default",
):
    """SDXL's CLIP-L + CLIP-G pair, in either order (the wider file is CLIP-G)."""
    first, second = (_text_encoder_weights(ctx.paths.full_path("text_encoders", n))
                     for n in (clip_name1, clip_name2))
    clip_l, clip_g = sorted((first, second), key=_width)
    return _build_clip(ctx, {"clip_l": clip_l, "clip_g": clip_g}, "sdxl", device)


@node("UNETLoader", category="advanced/loaders", display_name="Load Diffusion Model", outputs=[Output("MODEL")])
def unet_loader(
    ctx: NodeContext,
    unet_name: Annotated[str, Combo(files_in("diffusion_models"))],
    weight_dtype: Annotated[str, Combo(["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"])],
):
    """A standalone diffusion model file (LDM or diffusers layout)."""
    if weight_dtype != "default":
        ctx.warn(f"UNETLoader: {weight_dtype} weight storage is not supported by Kiln; "
                 "the model is loaded in its default precision.")
    return loading.load_unet(ctx.paths.full_path("diffusion_models", unet_name), config=ctx.config)
