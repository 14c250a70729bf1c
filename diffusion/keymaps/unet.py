"""Diffusers UNet layout → LDM layout (the names `UNetModel` uses), generated from the key structure."""
from __future__ import annotations

import re
from typing import Iterable, Mapping

from torch import Tensor

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
          "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
       "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
       "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}


def is_diffusers_unet(keys: Iterable[str]) -> bool:
    """Diffusers UNets (and ControlNets) name their stages `down_blocks` / `mid_block`."""
    keys = set(keys)
    return "conv_in.weight" in keys and any(k.startswith("down_blocks.0.resnets.0.") for k in keys)


def _count(keys: set[str], fmt: str) -> int:
    n = 0
    while any(k.startswith(fmt.format(n)) for k in keys):
        n += 1
    return n


def block_map(keys: Iterable[str]) -> dict[str, str]:
    """Diffusers module prefix → LDM module prefix (resnets still need `RESNET`'s inner renames)."""
    keys = set(keys)
    out = dict(TOP)
    levels = _count(keys, "down_blocks.{}.")
    n = 1
    for i in range(levels):
        for j in range(_count(keys, f"down_blocks.{i}.resnets.{{}}.")):
            out[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{n}.0"
            out[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{n}.1"
            n += 1
        if any(k.startswith(f"down_blocks.{i}.downsamplers.0.") for k in keys):
            out[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{n}.0.op"
            n += 1
    out["mid_block.resnets.0"] = "middle_block.0"
    out["mid_block.attentions.0"] = "middle_block.1"
    out["mid_block.resnets.1"] = "middle_block.2"
    m = 0
    for i in range(_count(keys, "up_blocks.{}.")):
        n_res = _count(keys, f"up_blocks.{i}.resnets.{{}}.")
        has_attn = any(k.startswith(f"up_blocks.{i}.attentions.") for k in keys)
        for j in range(n_res):
            out[f"up_blocks.{i}.resnets.{j}"] = f"output_blocks.{m + j}.0"
            out[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{m + j}.1"
        out[f"up_blocks.{i}.upsamplers.0.conv"] = f"output_blocks.{m + n_res - 1}.{2 if has_attn else 1}.conv"
        m += n_res
    return out


_RESNET_KEY = re.compile(r"^(.*\.resnets\.\d+)\.([a-z_0-9]+)\.(weight|bias)$")


def rename(key: str, blocks: Mapping[str, str]) -> str | None:
    """The LDM name of one diffusers key, or None when it is not part of the UNet."""
    m = _RESNET_KEY.match(key)
    if m and m.group(1) in blocks and m.group(2) in RESNET:
        return f"{blocks[m.group(1)]}.{RESNET[m.group(2)]}.{m.group(3)}"
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:cut])
        if head in blocks:
            return ".".join([blocks[head], *parts[cut:]])
    return None


def diffusers_unet_to_ldm(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a diffusers-layout UNet state dict to LDM keys; keys outside the UNet are kept as they are."""
    blocks = block_map(sd.keys())
    out = {}
    for key, value in sd.items():
        out[rename(key, blocks) or key] = value
    return out
