"""Loader nodes that patch a MODEL (and CLIP): LoRA / LyCORIS files and hypernetworks (nodes.md §5.1)."""

from __future__ import annotations

from typing import Annotated

from diffusion import loading
from diffusion.hypernetwork import Hypernetwork
from diffusion.patches import apply_patch_file
from engine.schema import Combo, Float, NodeContext, Output, Socket, files_in, node

_SHOWN_UNMATCHED = 5


def _apply(ctx: NodeContext, node_name: str, model, clip, lora_name: str, strength_model: float,
           strength_clip: float):
    """Load the file, patch clones, and warn (count and first keys) about keys that matched nothing."""
    sd = loading.read_state_dict(ctx.paths.full_path("loras", lora_name))
    model, clip, unmatched = apply_patch_file(sd, model, clip, strength_model, strength_clip)
    if unmatched:
        shown = ", ".join(unmatched[:_SHOWN_UNMATCHED])
        more = f" (and {len(unmatched) - _SHOWN_UNMATCHED} more)" if len(unmatched) > _SHOWN_UNMATCHED else ""
        ctx.warn(f"{node_name}: {len(unmatched)} keys of {lora_name} matched no weight: {shown}{more}")
    return model, clip


@node("LoraLoader", category="loaders", display_name="Load LoRA",
      outputs=[Output("MODEL", tooltip="The diffusion model with the LoRA applied."),
               Output("CLIP", tooltip="The text encoder with the LoRA applied.")],
      description="Applies a LoRA (or LyCORIS) file to the diffusion model and the text encoder, "
                  "with separate strengths.")
def lora_loader(
    ctx: NodeContext,
    model: Annotated[object, Socket("MODEL", tooltip="diffusion model to patch")],
    clip: Annotated[object, Socket("CLIP", tooltip="text encoder to patch")],
    lora_name: Annotated[str, Combo(files_in("loras"), tooltip="LoRA file")],
    strength_model: Annotated[float, Float(default=1.0, min=-100.0, max=100.0, step=0.01,
                                           tooltip="strength on the diffusion model (may be negative)")],
    strength_clip: Annotated[float, Float(default=1.0, min=-100.0, max=100.0, step=0.01,
                                          tooltip="strength on the text encoder (may be negative)")],
):
    """(MODEL, CLIP) patched clones; both strengths 0 return the inputs unchanged."""
    if strength_model == 0 and strength_clip == 0:
        return model, clip
    return _apply(ctx, "LoraLoader", model, clip, lora_name, strength_model, strength_clip)


@node("LoraLoaderModelOnly", category="loaders", display_name="LoraLoaderModelOnly",
      outputs=[Output("MODEL", tooltip="The diffusion model with the LoRA applied.")],
      description="Applies a LoRA (or LyCORIS) file to the diffusion model only.")
def lora_loader_model_only(
    ctx: NodeContext,
    model: Annotated[object, Socket("MODEL")],
    lora_name: Annotated[str, Combo(files_in("loras"))],
    strength_model: Annotated[float, Float(default=1.0, min=-100.0, max=100.0, step=0.01)],
):
    """The patched MODEL clone (text-encoder keys of the file are reported as unmatched)."""
    if strength_model == 0:
        return model
    return _apply(ctx, "LoraLoaderModelOnly", model, None, lora_name, strength_model, 0.0)[0]


@node("HypernetworkLoader", category="loaders", display_name="HypernetworkLoader", outputs=[Output("MODEL")],
      python_module="comfy_extras.nodes_hypernetwork", v3=True,
      description="Applies an A1111 hypernetwork to every attention's keys and values.")
def hypernetwork_loader(
    ctx: NodeContext,
    model: Annotated[object, Socket("MODEL")],
    hypernetwork_name: Annotated[str, Combo(files_in("hypernetworks"), style="combo")],
    strength: Annotated[float, Float(default=1.0, min=-10.0, max=10.0, step=0.01)],
):
    """A clone of the model with the hypernetwork hooked into its attention while it runs."""
    path = ctx.paths.full_path("hypernetworks", hypernetwork_name)
    hypernetwork = Hypernetwork.from_state_dict(loading.read_state_dict(path), strength)
    patched = model.clone()
    patched.hooks.append(hypernetwork)
    return patched
