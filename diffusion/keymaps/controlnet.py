"""Diffusers ControlNet and T2I-Adapter layouts → the original layouts (checkpoints.md §7.2, §7.4)."""
from __future__ import annotations

import re
from typing import Iterable, Mapping

from torch import Tensor

from diffusion.keymaps.unet import block_map, rename


def is_diffusers_controlnet(keys: Iterable[str]) -> bool:
    """Detected by `controlnet_cond_embedding.conv_in.weight`."""
    return "controlnet_cond_embedding.conv_in.weight" in set(keys)


def _hint_rename(key: str, n_blocks: int) -> str | None:
    m = re.match(r"^controlnet_cond_embedding\.(conv_in|conv_out|blocks\.(\d+))\.(weight|bias)$", key)
    if not m:
        return None
    if m.group(1) == "conv_in":
        index = 0
    elif m.group(1) == "conv_out":
        index = 2 * (n_blocks + 1)
    else:
        index = 2 * int(m.group(2)) + 2
    return f"input_hint_block.{index}.{m.group(3)}"


def diffusers_controlnet_to_ldm(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a diffusers ControlNet to the original keys (without the `control_model.` prefix)."""
    blocks = block_map(sd.keys())
    n_hint = len({k.split(".")[2] for k in sd if k.startswith("controlnet_cond_embedding.blocks.")})
    out = {}
    for key, value in sd.items():
        new = _hint_rename(key, n_hint)
        if new is None:
            new = re.sub(r"^controlnet_down_blocks\.(\d+)\.", r"zero_convs.\1.0.", key)
            new = re.sub(r"^controlnet_mid_block\.", "middle_block_out.0.", new)
        if new == key:
            new = rename(key, blocks) or key
        out[new] = value
    return out


def t2i_adapter_to_ldm(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Unwrap `adapter.` and rename diffusers `body.i.resnets.j.` → `body.(2i+j).`, `body.i.` → `body.(2i).`."""
    out = {}
    for key, value in sd.items():
        if key.startswith("adapter."):
            key = re.sub(r"^adapter\.body\.(\d+)\.resnets\.(\d+)\.",
                         lambda m: f"body.{2 * int(m.group(1)) + int(m.group(2))}.", key)
            key = re.sub(r"^adapter\.body\.(\d+)\.", lambda m: f"body.{2 * int(m.group(1))}.", key)
            key = key.removeprefix("adapter.")
        out[key] = value
    return out
