"""Device and dtype policy: where models run and in which dtype they compute."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RuntimeOptions:
    """The runtime flags `diffusion/` reads (engine's RuntimeConfig has the same attribute names)."""

    cpu: bool = False          # --cpu: never use an accelerator
    force_fp32: bool = False   # --force-fp32: store and compute every model in float32
    fp32_text_enc: bool = False


def compute_device(options: object = None) -> torch.device:
    """CUDA when available and not disabled by `--cpu`, else the CPU."""
    if not getattr(options, "cpu", False) and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether the CPU has bf16 instructions (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def unet_dtype(device: torch.device, storage: torch.dtype, options: object = None) -> torch.dtype:
    """Compute dtype of a UNet: fp32 when forced; CUDA fp16/bf16; CPU bf16 where it has native bf16, else fp32.

    Native bf16 measured faster for a full SD1.5 UNet forward on the development CPU (AMD EPYC with
    AVX512-BF16: 1.1-2.3x across runs, never slower; bench/runtime.py). The choice is by capability, not
    timed at start-up: timing on a busy machine flipped between runs, and the same seed must give the
    same image.
    """
    if getattr(options, "force_fp32", False):
        return torch.float32
    if device.type == "cuda":
        if storage == torch.bfloat16 and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def vae_dtype(device: torch.device, storage: torch.dtype, options: object = None) -> torch.dtype:
    """Compute dtype of a VAE: fp32 on CPU or when forced; bf16 on CUDA when supported (fp16 overflows), else fp32."""
    if getattr(options, "force_fp32", False) or device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32


def storage_dtype_for(stored: torch.dtype, options: object = None) -> torch.dtype:
    """The dtype weights are kept in: as stored, except float32 under `--force-fp32`."""
    if getattr(options, "force_fp32", False) and stored.is_floating_point:
        return torch.float32
    return stored
