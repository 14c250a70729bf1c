"""Text-encoder key tables: checkpoint prefixes, OpenCLIP ↔ Hugging Face CLIP names, both directions.

"HF names" here are transformers-4 `CLIPTextModel` names (`text_model.…`) plus `text_projection.weight`
and `logit_scale` at the encoder level; `diffusion.models.text_encoders` maps them onto the installed
transformers' module names (transformers 5 drops the `text_model.` level).
"""

from __future__ import annotations

import re
from typing import Mapping

import torch
from torch import Tensor

# family → [(encoder name, checkpoint prefix, layout)], in the order the prefixes are tried.
PREFIXES: dict[str, list[tuple[str, str, str]]] = {
    "sd1": [("clip_l", "cond_stage_model.transformer.", "hf")],
    "sd2": [("clip_h", "cond_stage_model.model.", "openclip"),
            ("clip_h", "conditioner.embedders.0.model.", "openclip")],
    "sdxl": [("clip_l", "conditioner.embedders.0.transformer.", "hf"),
             ("clip_g", "conditioner.embedders.1.model.", "openclip")],
    "sdxl_refiner": [("clip_g", "conditioner.embedders.0.model.", "openclip")],
}

# Saving: where each family writes each encoder (ComfyUI's layout, text-encoding.md §10.3).
SAVE_PREFIXES: dict[str, dict[str, tuple[str, str]]] = {
    "sd1": {"clip_l": ("cond_stage_model.transformer.", "hf")},
    "sd2": {"clip_h": ("cond_stage_model.model.", "openclip")},
    "sdxl": {"clip_l": ("conditioner.embedders.0.transformer.", "hf"),
             "clip_g": ("conditioner.embedders.1.model.", "openclip")},
    "sdxl_refiner": {"clip_g": ("conditioner.embedders.0.model.", "openclip")},
}

_OPENCLIP_LAYER = [  # (OpenCLIP suffix, HF suffix) inside one residual block
    ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"), ("attn.out_proj", "self_attn.out_proj"),
    ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2"),
]
_OPENCLIP_TOP = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
    "text_projection.weight": "text_projection.weight",
}
_HF_TOP_LEVEL = ("text_model.", "text_projection.", "logit_scale")
_RESBLOCK = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)$")
_HF_LAYER = re.compile(r"text_model\.encoder\.layers\.(\d+)\.(.+)$")


def family_group(family: str) -> str:
    """The key-layout group of a model family (`sd15_inpaint` → `sd1`, `sd2_v` → `sd2`, ...)."""
    if family.startswith("sdxl"):
        return "sdxl_refiner" if "refiner" in family else "sdxl"
    if family.startswith("sd2"):
        return "sd2"
    if family.startswith("sd1"):
        return "sd1"
    raise ValueError(f"no text encoder layout for model family {family!r}")


def openclip_to_hf(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename (and split/transpose) an OpenCLIP text tower, prefix already removed, to HF names."""
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        if key in _OPENCLIP_TOP:
            out[_OPENCLIP_TOP[key]] = value
        elif key == "text_projection":
            out["text_projection.weight"] = value.t().contiguous()  # OpenCLIP computes x @ P
        elif m := _RESBLOCK.match(key):
            layer, rest = f"text_model.encoder.layers.{m[1]}.", m[2]
            if rest.startswith("attn.in_proj_"):
                kind = rest.removeprefix("attn.in_proj_")  # weight | bias
                for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                    out[f"{layer}self_attn.{name}.{kind}"] = part
                continue
            for src, dst in _OPENCLIP_LAYER:
                if rest.startswith(src + "."):
                    out[layer + dst + rest[len(src):]] = value
                    break
            else:
                raise KeyError(f"unknown OpenCLIP text key {key!r}")
        elif key == "attn_mask":
            continue
        else:
            raise KeyError(f"unknown OpenCLIP text key {key!r}")
    return out


def hf_to_openclip(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """The reverse of `openclip_to_hf`: q/k/v concatenated into `in_proj_*`, projection transposed."""
    top = {v: k for k, v in _OPENCLIP_TOP.items() if k != "text_projection.weight"}
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, Tensor]] = {}
    for key, value in sd.items():
        if key in top:
            out[top[key]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.t().contiguous()
        elif m := _HF_LAYER.match(key):
            block, rest = f"transformer.resblocks.{m[1]}.", m[2]
            if rest.startswith(("self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj.")):
                qkv.setdefault((block, rest.rsplit(".", 1)[1]), {})[rest[10]] = value
                continue
            for src, dst in _OPENCLIP_LAYER:
                if rest.startswith(dst + "."):
                    out[block + src + rest[len(dst):]] = value
                    break
            else:
                raise KeyError(f"unknown HF text key {key!r}")
        else:
            raise KeyError(f"unknown HF text key {key!r}")
    for (block, kind), parts in qkv.items():
        out[f"{block}attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def standalone_to_hf(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A standalone text-encoder file (OpenCLIP, transformers-4 `text_model.…` or transformers-5
    names without it) → HF names; `position_ids` dropped."""
    if any(k.startswith("transformer.resblocks.") for k in sd.keys()):
        out = openclip_to_hf({k: sd[k] for k in sd.keys()})
    else:
        out = {k if k.startswith(_HF_TOP_LEVEL) else "text_model." + k: sd[k] for k in sd.keys()}
    out.pop("text_model.embeddings.position_ids", None)
    return out


def extract_encoders(sd: Mapping[str, Tensor], family: str) -> dict[str, dict[str, Tensor]]:
    """The text encoders of a checkpoint as `{encoder: {HF name: tensor}}` (empty when none are present)."""
    found: dict[str, dict[str, Tensor]] = {}
    for encoder, prefix, layout in PREFIXES[family_group(family)]:
        if encoder in found:
            continue
        part = {k[len(prefix):]: sd[k] for k in sd.keys() if k.startswith(prefix)}  # touch only these tensors
        if layout == "hf":  # old SD1 files lack the `text_model.` level
            part = {k if k.startswith(_HF_TOP_LEVEL) else "text_model." + k: v for k, v in part.items()}
        if not part:
            continue
        if layout == "openclip":
            part = openclip_to_hf(part)
        part.pop("text_model.embeddings.position_ids", None)  # positions are always 0…76
        found[encoder] = part
    return found


def to_checkpoint(encoders: dict[str, dict[str, Tensor]], family: str) -> dict[str, Tensor]:
    """HF-named encoder weights → single-file checkpoint keys of `family` (the saving direction)."""
    group = family_group(family)
    out: dict[str, Tensor] = {}
    for encoder, weights in encoders.items():
        prefix, layout = SAVE_PREFIXES[group][encoder]
        if layout == "openclip":
            out.update({prefix + k: v for k, v in hf_to_openclip(weights).items()})
            continue
        for key, value in weights.items():
            if group == "sdxl" and key in ("text_projection.weight", "logit_scale"):
                continue  # SDXL files carry no clip_l projection
            out[prefix + key] = value
        if group == "sdxl":
            out[prefix + "text_model.embeddings.position_ids"] = torch.arange(77, dtype=torch.int64)[None]
    return out
