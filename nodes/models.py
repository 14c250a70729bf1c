"""Model merging and checkpoint saving nodes (nodes.md §5.6): merges are patches, applied on use."""

from __future__ import annotations

import json
import os
from typing import Annotated

from safetensors.torch import save_file

from diffusion.patches import Merge
from engine.schema import Float, Hidden, NodeContext, Output, Socket, String, node
from nodes.image import save_image_path

_MODULE = "comfy_extras.nodes_model_merging"
_CATEGORY = "advanced/model_merging"
_NEVER_MERGED = ("position_ids", "logit_scale")


def _merge_models(model1, model2, strength: float, blend: bool):
    """A clone of model1 with every same-shaped UNet weight of model2 merged in as a patch."""
    merged = model1.clone()
    own = dict(model1.unet.named_parameters())
    patches = {key: Merge(param, tuple(model2.patches.get(key, ())), blend)
               for key, param in model2.unet.named_parameters()
               if key in own and own[key].shape == param.shape}
    merged.add_patches(patches, strength)
    return merged


@node("ModelMergeSimple", category=_CATEGORY, outputs=[Output("MODEL")], python_module=_MODULE,
      description="Blends two diffusion models: model1·(1−ratio) + model2·ratio.")
def model_merge_simple(
    model1: Annotated[object, Socket("MODEL")],
    model2: Annotated[object, Socket("MODEL")],
    ratio: Annotated[float, Float(default=1.0, min=0.0, max=1.0, step=0.01)],
):
    """ratio 1 gives model2's weights, 0 model1's."""
    return _merge_models(model1, model2, ratio, blend=True)


@node("ModelMergeAdd", category=_CATEGORY, outputs=[Output("MODEL")], python_module=_MODULE,
      description="Adds model2's weights to model1's.")
def model_merge_add(
    model1: Annotated[object, Socket("MODEL")],
    model2: Annotated[object, Socket("MODEL")],
):
    """model1 + model2, weight by weight."""
    return _merge_models(model1, model2, 1.0, blend=False)


@node("ModelMergeSubtract", category=_CATEGORY, outputs=[Output("MODEL")], python_module=_MODULE,
      description="Subtracts model2's weights, scaled by multiplier, from model1's.")
def model_merge_subtract(
    model1: Annotated[object, Socket("MODEL")],
    model2: Annotated[object, Socket("MODEL")],
    multiplier: Annotated[float, Float(default=1.0, min=-10.0, max=10.0, step=0.01)],
):
    """model1 − multiplier·model2 (the "add difference" recipe's first half)."""
    return _merge_models(model1, model2, -multiplier, blend=False)


@node("CLIPMergeSimple", category=_CATEGORY, outputs=[Output("CLIP")], python_module=_MODULE,
      description="Blends two text encoders: clip1·(1−ratio) + clip2·ratio.")
def clip_merge_simple(
    clip1: Annotated[object, Socket("CLIP")],
    clip2: Annotated[object, Socket("CLIP")],
    ratio: Annotated[float, Float(default=1.0, min=0.0, max=1.0, step=0.01)],
):
    """Every same-shaped encoder weight except position ids and the logit scale is blended."""
    merged = clip1.clone()
    params1, params2 = dict(clip1.encoders.named_parameters()), dict(clip2.encoders.named_parameters())
    patches = {}
    for name, encoder in clip1.encoders.items():
        for hf in clip1.hf_weight_keys(name):
            internal = f"{name}.{encoder.module_key(hf)}"
            source, mine = params2.get(internal), params1.get(internal)
            if hf.endswith(_NEVER_MERGED) or source is None or mine is None or mine.shape != source.shape:
                continue
            patches[f"{name}.transformer.{hf}"] = Merge(source, tuple(clip2.patches.get(internal, ())))
    merged.add_patches(patches, ratio)
    return merged


def _modelspec(family: str, title: str) -> dict[str, str]:
    """Stability's model-spec metadata, written for SDXL checkpoints as ComfyUI does."""
    if not family.startswith("sdxl"):
        return {}
    arch = "stable-diffusion-xl-v1-refiner" if family == "sdxl_refiner" else "stable-diffusion-xl-v1-base"
    return {"modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": arch,
            "modelspec.implementation": "sgm", "modelspec.title": title}


@node("CheckpointSave", category=_CATEGORY, display_name="Save Checkpoint", outputs=[], output_node=True,
      python_module=_MODULE, description="Saves model, text encoder and VAE as one single-file checkpoint.")
def checkpoint_save(
    ctx: NodeContext,
    model: Annotated[object, Socket("MODEL")],
    clip: Annotated[object, Socket("CLIP")],
    vae: Annotated[object, Socket("VAE")],
    filename_prefix: Annotated[str, String(default="checkpoints/ComfyUI")],
    prompt: Annotated[dict, Hidden("PROMPT")] = None,
    extra_pnginfo: Annotated[dict, Hidden("EXTRA_PNGINFO")] = None,
):
    """Write `<prefix>_<counter:05>_.safetensors` in the original layout, patches and merges baked in."""
    folder, filename, counter, _ = save_image_path(ctx, ctx.paths.output_dir, filename_prefix, 0, 0)
    name = f"{filename}_{counter:05}_.safetensors"
    with model.active(device="cpu") as unet:
        weights = {f"model.diffusion_model.{k}": v.detach().clone() if k in model.patches else v.detach()
                   for k, v in unet.state_dict().items()}
    weights.update(clip.checkpoint_state_dict())
    weights.update({f"first_stage_model.{k}": v.detach() for k, v in vae.model.state_dict().items()})
    metadata = _modelspec(model.family, filename)
    if not ctx.config.disable_metadata:
        if prompt is not None:
            metadata["prompt"] = json.dumps(prompt)
        metadata.update({k: json.dumps(v) for k, v in (extra_pnginfo or {}).items()})
    save_file({k: v.contiguous() for k, v in weights.items()}, os.path.join(folder, name), metadata=metadata)
