"""What model weights are loaded where: moves models to their compute device, offloads, frees, reports."""
from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager
from typing import Iterator, Mapping

import torch
from torch import Tensor, nn

_lock = threading.RLock()
_on_device: "weakref.WeakKeyDictionary[nn.Module, torch.device]" = weakref.WeakKeyDictionary()  # LRU order
_OFFLOAD = torch.device("cpu")
# What the loaders keep alive (cache entries); free_all() drops them so weights can be collected.
_releasers: list = []


def module_bytes(module: nn.Module) -> int:
    """Bytes held by a module's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def module_device(module: nn.Module) -> torch.device:
    """Where a module's first parameter lives (cpu for a parameter-less module)."""
    for p in module.parameters():
        return p.device
    return _OFFLOAD


def _free_device_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free
    return 1 << 62


def load_to(module: nn.Module, device: torch.device) -> None:
    """Move `module` to `device`, offloading least recently used models first when memory is short."""
    with _lock:
        if module_device(module) != device:
            if device.type != "cpu":
                need = module_bytes(module) + (1 << 30)  # leave ~1 GiB for activations
                for other in list(_on_device.keys()):
                    if _free_device_bytes(device) >= need:
                        break
                    if other is not module and _on_device.get(other) == device:
                        offload(other)
            module.to(device)
        _on_device.pop(module, None)
        _on_device[module] = device  # most recently used last


@contextmanager
def weights_as(module: nn.Module, dtype: torch.dtype, replacements: Mapping[str, Tensor] | None = None
               ) -> Iterator[nn.Module]:
    """Temporarily give `module` its floating-point weights in `dtype` (plus `replacements` by name).

    Casting once per use instead of in every layer call matters: converting an SD1.5 UNet's weights
    takes seconds on a CPU. The original tensors are put back afterwards, bit-identical.
    """
    params = dict(module.named_parameters())
    originals: dict[str, Tensor] = {}
    try:
        with torch.no_grad():
            for name, param in params.items():
                new = (replacements or {}).get(name)
                if new is None:
                    if not param.is_floating_point() or param.dtype == dtype:
                        continue
                    new = param.data.to(dtype)
                originals[name] = param.data
                param.data = new
        yield module
    finally:
        for name, data in originals.items():
            params[name].data = data


def offload(module: nn.Module) -> None:
    """Move a model's weights back to the CPU."""
    with _lock:
        module.to(_OFFLOAD)
        _on_device.pop(module, None)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def register_releaser(release) -> None:
    """Register a callable that drops a loader cache; `free_all` calls each."""
    _releasers.append(release)


def free_all() -> None:
    """Unload everything (`/free` with `unload_models`): offload device copies and drop loader caches."""
    with _lock:
        for module in list(_on_device.keys()):
            if _on_device.get(module, _OFFLOAD).type != "cpu":
                offload(module)
        _on_device.clear()
        for release in _releasers:
            release()
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def loaded_models() -> list[tuple[str, torch.device, int]]:
    """(class name, device, bytes) of every model that has been used, least recently used first."""
    with _lock:
        return [(type(m).__name__, d, module_bytes(m)) for m, d in _on_device.items()]


def stats() -> dict:
    """Memory figures for `/system_stats`: RAM total/free, per-device VRAM, bytes of loaded models."""
    ram_total, ram_free = _ram()
    out = {"ram_total": ram_total, "ram_free": ram_free, "models_bytes": sum(b for _, _, b in loaded_models()),
           "devices": []}
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            out["devices"].append({"name": f"cuda:{i} {torch.cuda.get_device_name(i)}", "type": "cuda", "index": i,
                                   "vram_total": total, "vram_free": free,
                                   "torch_vram_total": torch.cuda.memory_reserved(i),
                                   "torch_vram_free": torch.cuda.memory_reserved(i) - torch.cuda.memory_allocated(i)})
    else:
        out["devices"].append({"name": "cpu", "type": "cpu", "index": None, "vram_total": ram_total,
                               "vram_free": ram_free, "torch_vram_total": ram_total, "torch_vram_free": ram_free})
    return out


def _ram() -> tuple[int, int]:
    """(total, available) bytes of system memory from /proc/meminfo (0, 0 where unavailable)."""
    try:
        info = {}
        with open("/proc/meminfo") as f:
            for line in f:
                name, value = line.split(":", 1)
                info[name] = int(value.split()[0]) * 1024
        return info["MemTotal"], info.get("MemAvailable", info["MemFree"])
    except (OSError, KeyError, ValueError):
        return 0, 0
