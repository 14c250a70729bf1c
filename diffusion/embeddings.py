"""Textual-inversion embedding files: lookup by name and the vector formats (text-encoding.md §5)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

_EXTENSIONS = (".safetensors", ".pt", ".bin")


class EmbeddingLookup:
    """Finds `embedding:NAME` files under the embeddings directories and reads their vectors."""

    def __init__(self, directories: list[str]):
        self.directories = [os.path.abspath(d) for d in directories]
        self._loaded: dict[str, object] = {}

    def _search_dirs(self) -> list[str]:
        """Every configured directory and all of its sub-directories (symlinks followed)."""
        found = []
        for root in self.directories:
            for here, _, _ in os.walk(root, followlinks=True):
                found.append(here)
        return found

    def find(self, name: str) -> str | None:
        """The file for `name` (which may carry a sub-path and/or an extension), or None."""
        for directory in self._search_dirs():
            path = os.path.abspath(os.path.join(directory, name))
            if os.path.commonpath([path, directory]) != directory:
                continue  # escapes the directory
            for candidate in (path, *(path + ext for ext in _EXTENSIONS)):
                if os.path.isfile(candidate):
                    return candidate
        return None

    def vectors(self, name: str, encoder: str, width: int) -> Tensor | None:
        """The embedding's vectors [n, D] for `encoder` (`clip_l` | `clip_h` | `clip_g`), None if absent."""
        path = self.find(name)
        if path is None:
            return None
        if path not in self._loaded:
            self._loaded[path] = load_embedding_file(path)
        return select_vectors(self._loaded[path], encoder, width)


def load_embedding_file(path: str) -> object:
    """safetensors, else a weights-only torch pickle, else the raw-float fallback of old zip files."""
    if path.endswith(".safetensors"):
        return load_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return _raw_zip_vectors(path)


def _raw_zip_vectors(path: str) -> dict[str, Tensor]:
    """Last resort (a ComfyUI quirk): float32 data of the zip's `data/` members, last name first."""
    with zipfile.ZipFile(path) as archive:
        for member in sorted((n for n in archive.namelist() if "data/" in n), reverse=True):
            raw = archive.read(member)
            count = len(raw) // 4
            if count >= 768:
                width = 768 if count % 768 == 0 else 1024
                values = torch.frombuffer(bytearray(raw[: count * 4]), dtype=torch.float32)
                return {"emb_params": values[: count - count % width].reshape(-1, width)}
    raise ValueError(f"cannot read embedding file {Path(path).name}")


def select_vectors(data: object, encoder: str, width: int) -> Tensor:
    """Pick the vectors of one encoder out of a loaded embedding file (the §5.2 rule order)."""
    if isinstance(data, list):
        found = [t.reshape(-1, width) for item in data for t in _tensors(item) if t.shape[-1] == width]
        return _as_matrix(torch.cat(found))
    if not isinstance(data, dict) or not data:
        raise ValueError("embedding file holds no tensors")
    if "string_to_param" in data:
        return _as_matrix(next(iter(data["string_to_param"].values())))
    if encoder in data:
        return _as_matrix(data[encoder])
    bundled = [v for k, v in data.items() if k.startswith("bundle_emb.") and ".string_to_param." in k]
    if bundled:
        return torch.cat([_as_matrix(v) for v in bundled])
    bundled = [v for k, v in data.items() if k.startswith("bundle_emb.") and k.endswith("." + encoder)]
    if bundled:
        return torch.cat([_as_matrix(v) for v in bundled])
    return _as_matrix(next(iter(data.values())))


def _tensors(item: object) -> list[Tensor]:
    if isinstance(item, Tensor):
        return [item]
    if isinstance(item, dict):
        return [t for v in item.values() for t in _tensors(v)]
    return []


def _as_matrix(t: Tensor) -> Tensor:
    """A 1-D tensor is one vector; [n, D] is n vectors."""
    return t.reshape(1, -1) if t.ndim == 1 else t.reshape(-1, t.shape[-1])
