"""The `.latent` file: a safetensors file with `latent_tensor` and a format-version marker."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

VERSION_MARKER = "latent_format_version_0"
OLD_FORMAT_SCALE = 1.0 / 0.18215  # pre-marker files stored latents multiplied by the SD1 scale factor


def save_latent(path: str, samples: Tensor, metadata: dict[str, str] | None = None) -> None:
    """Write ``samples`` (raw, unscaled) with the version marker and string metadata."""
    tensors = {"latent_tensor": samples.contiguous(), VERSION_MARKER: torch.tensor([])}
    save_file(tensors, path, metadata=metadata)


def load_latent(path: str) -> Tensor:
    """Read ``latent_tensor`` as float32, undoing the scale factor of old-format files."""
    data = load_file(path, device="cpu")
    samples = data["latent_tensor"].float()
    if VERSION_MARKER not in data:
        samples = samples * OLD_FORMAT_SCALE
    return samples


def save_metadata(prompt: dict | None, extra_pnginfo: dict | None) -> dict[str, str]:
    """The safetensors metadata SaveLatent writes: the prompt and each extra_pnginfo entry as JSON."""
    meta = {"prompt": json.dumps(prompt) if prompt is not None else ""}
    for key, value in (extra_pnginfo or {}).items():
        meta[key] = json.dumps(value)
    return meta
