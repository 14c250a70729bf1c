"""ModelHandle: the MODEL wire object — a shared UNet plus per-clone weight patches and settings."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Protocol

import torch
from torch import Tensor

from diffusion import memory
from diffusion.latent_formats import LatentFormat
from diffusion.models.unet import UNetModel


class WeightPatch(Protocol):
    """A weight modification (LoRA, LoHa, diff, ...): new float32 weight from the current one."""

    def apply(self, weight: Tensor, strength: float) -> Tensor: ...


class ModuleHook(Protocol):
    """An activation-level patch (e.g. a hypernetwork): installs torch hooks, returns their handles."""

    def install(self, unet: torch.nn.Module) -> list[Any]: ...


_ACTIVE_LOCK = threading.RLock()  # patching mutates the shared UNet: one active() at a time


class ModelHandle:
    """A UNet with its family facts; clones share the UNet and differ only in patches/options."""

    def __init__(self, unet: UNetModel, config: dict[str, Any], family: str, prediction: str,
                 latent_format: LatentFormat, *, load_device: torch.device | str = "cpu",
                 compute_dtype: torch.dtype = torch.float32, options: dict[str, Any] | None = None):
        self.unet = unet
        self.config = config
        self.family = family
        self.prediction = prediction
        self.latent_format = latent_format
        self.load_device = torch.device(load_device)
        self.compute_dtype = compute_dtype
        self.patches: dict[str, list[tuple[float, WeightPatch]]] = {}
        self.hooks: list[ModuleHook] = []  # installed only while active()
        self.options: dict[str, Any] = dict(options or {})  # free-form per-clone settings (sampling overrides, ...)

    def clone(self) -> ModelHandle:
        """A new handle on the same UNet with a copy of the patch lists and options."""
        options = {k: dict(v) if isinstance(v, dict) else v for k, v in self.options.items()}  # nested dicts too
        other = ModelHandle(self.unet, self.config, self.family, self.prediction, self.latent_format,
                            load_device=self.load_device, compute_dtype=self.compute_dtype, options=options)
        other.patches = {k: list(v) for k, v in self.patches.items()}
        other.hooks = list(self.hooks)
        return other

    def weight_keys(self) -> set[str]:
        """The UNet's own state-dict keys (what patches are keyed by)."""
        return set(self.unet.state_dict().keys())

    def add_patches(self, patches: Mapping[str, WeightPatch], strength: float = 1.0) -> set[str]:
        """Record `(strength, patch)` for keys this UNet has (`diffusion_model.` prefix accepted); returns the matched keys."""
        params = dict(self.unet.named_parameters())
        matched: set[str] = set()
        for key, patch in patches.items():
            own = key.removeprefix("model.").removeprefix("diffusion_model.")
            if own in params:
                self.patches.setdefault(own, []).append((strength, patch))
                matched.add(key)
        return matched

    def model_size(self) -> int:
        """Bytes of the UNet's weights in their storage dtype."""
        return sum(p.numel() * p.element_size() for p in self.unet.parameters())

    @contextmanager
    def active(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Iterator[UNetModel]:
        """Yield the UNet on `device` with weights in `dtype` and this clone's patches applied.

        Patched weights are computed in float32 and rounded to the storage dtype, then every weight
        is cast once to `dtype`; the original tensors are put back afterwards, bit-identical.
        """
        device = torch.device(device) if device is not None else self.load_device
        dtype = dtype or self.compute_dtype
        with _ACTIVE_LOCK:
            memory.load_to(self.unet, device)
            params = dict(self.unet.named_parameters())
            patched: dict[str, Tensor] = {}
            with torch.no_grad():
                for key, entries in self.patches.items():
                    weight = params[key].data.to(device=device, dtype=torch.float32, copy=True)
                    for strength, patch in entries:
                        weight = patch.apply(weight, strength)
                    patched[key] = weight.to(params[key].dtype).to(dtype)
            old_dtype = self.unet.compute_dtype
            handles: list[Any] = []
            try:
                with memory.weights_as(self.unet, dtype, patched):
                    self.unet.compute_dtype = dtype
                    for hook in self.hooks:
                        handles.extend(hook.install(self.unet))
                    yield self.unet
            finally:
                for handle in handles:
                    handle.remove()
                self.unet.compute_dtype = old_dtype

    def __repr__(self) -> str:
        return f"ModelHandle(family={self.family!r}, prediction={self.prediction!r}, patched_keys={len(self.patches)})"
