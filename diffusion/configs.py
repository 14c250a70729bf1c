"""Family configurations as data: the UNet and VAE hyper-parameters of SD 1.x, SD 2.x, SDXL.

`transformer_depth` lists the depth after each input ResBlock (in order); `transformer_depth_output`
lists the depth of `output_blocks.0 … last` in natural block order (checkpoints.md §4).
"""
from __future__ import annotations

from typing import Any

SD15: dict[str, Any] = {
    "in_channels": 4, "out_channels": 4, "model_channels": 320, "channel_mult": [1, 2, 4, 4],
    "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
    "transformer_depth_middle": 1, "transformer_depth_output": [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    "context_dim": 768, "use_linear_in_transformer": False, "num_heads": 8, "num_head_channels": -1,
    "adm_in_channels": None, "attention_upcast": False,
}

SD15_INPAINT: dict[str, Any] = {**SD15, "in_channels": 9}

SD20: dict[str, Any] = {
    **SD15, "context_dim": 1024, "use_linear_in_transformer": True, "num_heads": -1,
    "num_head_channels": 64, "attention_upcast": True,
}

SDXL: dict[str, Any] = {
    "in_channels": 4, "out_channels": 4, "model_channels": 320, "channel_mult": [1, 2, 4],
    "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10],
    "transformer_depth_middle": 10, "transformer_depth_output": [10, 10, 10, 2, 2, 2, 0, 0, 0],
    "context_dim": 2048, "use_linear_in_transformer": True, "num_heads": -1, "num_head_channels": 64,
    "adm_in_channels": 2816, "attention_upcast": False,
}

SDXL_REFINER: dict[str, Any] = {
    "in_channels": 4, "out_channels": 4, "model_channels": 384, "channel_mult": [1, 2, 4, 4],
    "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [0, 0, 4, 4, 4, 4, 0, 0],
    "transformer_depth_middle": 4, "transformer_depth_output": [0, 0, 0, 4, 4, 4, 4, 4, 4, 0, 0, 0],
    "context_dim": 1280, "use_linear_in_transformer": True, "num_heads": -1, "num_head_channels": 64,
    "adm_in_channels": 2560, "attention_upcast": False,
}

VAE: dict[str, Any] = {
    "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "in_channels": 3, "out_ch": 3,
    "z_channels": 4, "embed_dim": 4,
}

# Per-family settings that are not shapes (checkpoints.md §3.2): how heads are counted, attention precision.
FAMILY_SETTINGS: dict[str, dict[str, Any]] = {
    "sd1": {"num_heads": 8, "num_head_channels": -1, "attention_upcast": False},
    "sd2": {"num_heads": -1, "num_head_channels": 64, "attention_upcast": True},
    "sdxl": {"num_heads": -1, "num_head_channels": 64, "attention_upcast": False},
    "sdxl_refiner": {"num_heads": -1, "num_head_channels": 64, "attention_upcast": False},
}

# Tiny configurations in the same layouts, for tests and demo models (seconds on a CPU).
TINY_SD1: dict[str, Any] = {
    **SD15, "model_channels": 32, "channel_mult": [1, 2], "num_res_blocks": [1, 1],
    "transformer_depth": [1, 1], "transformer_depth_middle": 1, "transformer_depth_output": [1, 1, 1, 1],
    "context_dim": 32,
}
TINY_SD2: dict[str, Any] = {**TINY_SD1, **{k: SD20[k] for k in ("use_linear_in_transformer", "num_heads",
                                                                  "num_head_channels", "attention_upcast")},
                            "model_channels": 64}
TINY_SDXL: dict[str, Any] = {
    **SDXL, "model_channels": 64, "channel_mult": [1, 2], "num_res_blocks": [1, 1],
    "transformer_depth": [0, 2], "transformer_depth_middle": 2, "transformer_depth_output": [2, 2, 0, 0],
    "context_dim": 32, "adm_in_channels": 48,
}
TINY_VAE: dict[str, Any] = {**VAE, "ch": 32, "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1}
