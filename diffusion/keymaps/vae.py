"""Diffusers VAE layout → LDM layout (checkpoints.md §6.2)."""
from __future__ import annotations

import re
from typing import Iterable, Mapping

from torch import Tensor

ATTN = {"group_norm": "norm", "query": "q", "to_q": "q", "key": "k", "to_k": "k", "value": "v", "to_v": "v",
        "proj_attn": "proj_out", "to_out.0": "proj_out"}


def is_diffusers_vae(keys: Iterable[str]) -> bool:
    """Detected by `decoder.up_blocks.0.resnets.0.norm1.weight`."""
    return "decoder.up_blocks.0.resnets.0.norm1.weight" in set(keys)


def _levels(keys: set[str]) -> int:
    n = 0
    while any(k.startswith(f"decoder.up_blocks.{n}.") for k in keys):
        n += 1
    return n


def rename(key: str, levels: int) -> str:
    """The LDM name of one diffusers VAE key."""
    k = re.sub(r"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.down.\1.block.\2.", key)
    k = re.sub(r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", k)
    k = re.sub(r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.",
               lambda m: f"decoder.up.{levels - 1 - int(m.group(1))}.block.{m.group(2)}.", k)
    k = re.sub(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
               lambda m: f"decoder.up.{levels - 1 - int(m.group(1))}.upsample.", k)
    k = re.sub(r"\.mid_block\.resnets\.(\d+)\.", lambda m: f".mid.block_{int(m.group(1)) + 1}.", k)
    k = k.replace(".mid_block.attentions.0.", ".mid.attn_1.")
    k = k.replace(".conv_shortcut.", ".nin_shortcut.").replace(".conv_norm_out.", ".norm_out.")
    if ".mid.attn_1." in k:
        head, tail = k.split(".mid.attn_1.")
        name, param = tail.rsplit(".", 1)
        k = f"{head}.mid.attn_1.{ATTN.get(name, name)}.{param}"
    return k


def diffusers_vae_to_ldm(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a diffusers VAE state dict to LDM keys; attention projections become 1x1 conv weights."""
    levels = _levels(set(sd))
    out = {}
    for key, value in sd.items():
        new = rename(key, levels)
        if ".mid.attn_1." in new and new.endswith(".weight") and value.dim() == 2:
            value = value.reshape(*value.shape, 1, 1)  # [C, C] → [C, C, 1, 1]
        out[new] = value
    return out
