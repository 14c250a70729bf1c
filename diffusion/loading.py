"""Loading model files: mmap'd safetensors, weights-only pickles, meta-device construction, dtype policy, cache.

Models are built on the meta device and given the file's tensors with `load_state_dict(assign=True)`,
so a safetensors file's weights are the mmap'd pages themselves and never held twice.
"""
from __future__ import annotations

import os
import pickle
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from safetensors import safe_open
from torch import Tensor, nn

from diffusion import detect, devices, memory
from diffusion.keymaps.controlnet import diffusers_controlnet_to_ldm, is_diffusers_controlnet, t2i_adapter_to_ldm
from diffusion.keymaps.unet import diffusers_unet_to_ldm, is_diffusers_unet
from diffusion.keymaps.vae import diffusers_vae_to_ldm, is_diffusers_vae
from diffusion.latent_formats import for_family
from diffusion.model_handle import ModelHandle
from diffusion.models import storage_dtype
from diffusion.models.controlnet import ControlNet, t2i_adapter_from_shapes
from diffusion.models.unet import UNetModel
from diffusion.models.vae import AutoencoderKL
from diffusion.vae_handle import VAEHandle

StateDict = dict[str, Tensor]
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")


class UnsafeCheckpoint(ValueError):
    """A pickle that cannot be loaded with `weights_only=True` (it would need arbitrary code)."""


def read_state_dict(path: str | os.PathLike) -> StateDict:
    """All tensors of a model file: safetensors through mmap, anything else via `torch.load(weights_only=True)`."""
    path = os.fspath(path)
    if path.lower().endswith(SAFETENSORS_SUFFIXES):
        with safe_open(path, framework="pt", device="cpu") as f:  # zero-copy views of the mapped file
            return {key: f.get_tensor(key) for key in f.keys()}
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise
        obj = _torch_load(path)  # legacy (non-zip) pickles cannot be mmap'd
    except pickle.UnpicklingError as err:
        raise _refusal(path, err) from err
    return unwrap(obj)


def _torch_load(path: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise _refusal(path, err) from err


def _refusal(path: str, err: Exception) -> UnsafeCheckpoint:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return UnsafeCheckpoint(
        f"refusing to load {os.path.basename(path)}: it is a pickle that needs more than plain tensors "
        f"(weights_only loading failed: {first}). Only weights-only pickles and safetensors files are loaded, "
        "because unpickling can run arbitrary code; convert the file to .safetensors with a trusted tool.")


def unwrap(obj: Any) -> StateDict:
    """`state_dict` if present, else the single dict value of a one-key dict, else the object (checkpoints.md §1)."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and len(obj) == 1 and isinstance(next(iter(obj.values())), dict):
        obj = next(iter(obj.values()))
    if not isinstance(obj, dict):
        raise detect.UnknownModelFile(f"the file holds a {type(obj).__name__}, not a dict of tensors")
    return obj


def shapes_of(sd: Mapping[str, Any], prefix: str = "") -> dict[str, tuple[int, ...]]:
    """`key -> shape` of the tensors of a state dict; nested dicts (A1111 embeddings) give dotted keys."""
    out: dict[str, tuple[int, ...]] = {}
    for k, v in sd.items():
        if isinstance(v, Tensor):
            out[prefix + str(k)] = tuple(v.shape)
        elif isinstance(v, Mapping):
            out.update(shapes_of(v, f"{prefix}{k}."))
    return out


def sub_dict(sd: StateDict, prefix: str) -> StateDict:
    """The tensors under `prefix`, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def build(factory: Callable[[], nn.Module], sd: StateDict, options: object = None, what: str = "model",
          weight_dtype: torch.dtype | None = None) -> nn.Module:
    """Construct on the meta device and take the tensors as parameters (no copy); missing keys are an error.

    Weights keep their stored dtype unless `--force-fp32` or a loader's `weight_dtype` says otherwise.
    """
    with torch.device("meta"):
        model = factory()
    wanted = model.state_dict().keys()
    missing = [k for k in wanted if k not in sd]
    if missing:
        raise detect.UnknownModelFile(f"{what} weights incomplete: {len(missing)} tensors missing, e.g. {missing[:5]}")
    weights = {}
    for k in wanted:
        t = sd[k]
        storage = devices.storage_dtype_for(t.dtype, options)
        if weight_dtype is not None and t.is_floating_point() and not getattr(options, "force_fp32", False):
            storage = weight_dtype
        weights[k] = t if t.dtype == storage else t.to(storage)
    model.load_state_dict(weights, strict=True, assign=True)
    model.requires_grad_(False)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# Checkpoints


def load_checkpoint(path: str | os.PathLike, *, config: object = None, output_vae: bool = True,
                    output_clip: bool = True) -> tuple[ModelHandle | None, Any, VAEHandle | None]:
    """(MODEL, CLIP, VAE) of a single-file SD1/SD2/SDXL checkpoint; cached by path + modification time."""
    options = config or devices.RuntimeOptions()
    model, clip, vae = _cached(path, options, "checkpoint", lambda: _load_checkpoint(path, options))
    return (model.clone() if model else None,
            clip.clone() if (clip is not None and output_clip) else None,
            vae if output_vae else None)


def _load_checkpoint(path: str | os.PathLike, options: object) -> tuple[ModelHandle, Any, VAEHandle | None]:
    sd = read_state_dict(path)
    shapes = shapes_of(sd)
    kind = detect.file_kind(shapes)
    if kind != "checkpoint":
        raise detect.UnknownModelFile(f"{os.path.basename(os.fspath(path))} is a {kind} file, not a checkpoint")
    info = detect.detect_checkpoint(shapes, get_tensor=sd.__getitem__)
    model = model_handle_from(sub_dict(sd, info.unet_prefix), info, options)
    vae = None
    if info.has_vae:
        vae = vae_handle_from(sub_dict(sd, detect.VAE_PREFIX), info.family, options)
    return model, _load_clip(sd, info.family, options), vae


def model_handle_from(unet_sd: StateDict, info: detect.CheckpointInfo, options: object,
                      weight_dtype: torch.dtype | None = None) -> ModelHandle:
    """A ModelHandle for detected UNet weights (keys without prefix)."""
    unet = build(lambda: UNetModel(**info.unet_config), unet_sd, options, "UNet", weight_dtype)
    device = devices.compute_device(options)
    dtype = devices.unet_dtype(device, storage_dtype(unet), options)
    return ModelHandle(unet, info.unet_config, info.family, info.prediction, for_family(info.family),
                       load_device=device, compute_dtype=dtype, options={"sampling": dict(info.sampling_options)})


def vae_handle_from(vae_sd: StateDict, family: str, options: object) -> VAEHandle:
    """A VAEHandle for LDM-layout VAE weights (keys without prefix)."""
    cfg = detect.vae_config(shapes_of(vae_sd))
    vae = build(lambda: AutoencoderKL(**cfg), vae_sd, options, "VAE")
    device = devices.compute_device(options)
    return VAEHandle(vae, for_family(family), device=device, dtype=devices.vae_dtype(device, storage_dtype(vae), options))


def _load_clip(sd: StateDict, family: str, options: object) -> Any:
    """The text teammate's ClipHandle, stored fp16 (fp32 under --force-fp32); None if the module is absent."""
    try:
        from diffusion.models.text_encoders import clip_from_state_dict
    except ImportError:
        return None
    force = getattr(options, "force_fp32", False) or getattr(options, "fp32_text_enc", False)
    return clip_from_state_dict(sd, family, torch.float32 if force else torch.float16)


# ---------------------------------------------------------------------------------------------
# Standalone files


def load_unet(path: str | os.PathLike, *, config: object = None, weight_dtype: torch.dtype | None = None,
              compute_dtype: torch.dtype | None = None) -> ModelHandle:
    """A bare diffusion model file (`UNETLoader`): LDM keys with or without a prefix, or diffusers layout.

    `weight_dtype` overrides the storage dtype (e.g. `torch.float8_e4m3fn`; ignored under `--force-fp32`),
    `compute_dtype` the dtype the UNet computes in.
    """
    options = config or devices.RuntimeOptions()

    def load() -> ModelHandle:
        sd = read_state_dict(path)
        if is_diffusers_unet(sd.keys()):
            sd = diffusers_unet_to_ldm(sd)
        shapes = shapes_of(sd)
        prefix = "" if "input_blocks.0.0.weight" in shapes else detect.unet_prefix(shapes)
        info = detect.detect_checkpoint(shapes, get_tensor=sd.__getitem__, prefix=prefix)
        return model_handle_from(sub_dict(sd, prefix), info, options, weight_dtype)

    model = _cached(path, options, f"unet:{weight_dtype}", load).clone()
    if compute_dtype is not None and not getattr(options, "force_fp32", False):
        model.compute_dtype = compute_dtype
    return model


def load_vae(path: str | os.PathLike, *, config: object = None, family: str | None = None) -> VAEHandle:
    """A standalone VAE file (LDM or diffusers layout, checkpoints.md §6.2)."""
    options = config or devices.RuntimeOptions()

    def load() -> VAEHandle:
        sd = read_state_dict(path)
        if detect.VAE_PREFIX + "decoder.conv_in.weight" in sd:
            sd = sub_dict(sd, detect.VAE_PREFIX)
        if is_diffusers_vae(sd.keys()):
            sd = diffusers_vae_to_ldm(sd)
        for part, name in (("decoder.", "post_quant_conv"), ("encoder.", "quant_conv")):
            for suffix in ("weight", "bias"):
                if f"{part}{name}.{suffix}" in sd:  # some files nest the quant convs
                    sd[f"{name}.{suffix}"] = sd.pop(f"{part}{name}.{suffix}")
        return vae_handle_from(sd, family or "sd1", options)

    return _cached(path, options, f"vae:{family}", load)


@dataclass
class ControlModel:
    """A loaded ControlNet or T2I-Adapter with what sampling needs to run it."""

    model: nn.Module
    kind: str  # "controlnet" | "t2i_adapter"
    family: str | None
    load_device: torch.device
    compute_dtype: torch.dtype
    global_average_pooling: bool = False  # `_shuffle` ControlNets: residuals replaced by their spatial mean


def load_controlnet(path: str | os.PathLike, *, config: object = None) -> ControlModel:
    """A ControlNet (original or diffusers layout) or T2I-Adapter file (checkpoints.md §7)."""
    options = config or devices.RuntimeOptions()
    name = os.path.splitext(os.path.basename(os.fspath(path)))[0]

    def load() -> ControlModel:
        sd = read_state_dict(path)
        if "difference" in sd:
            raise detect.UnsupportedModel("diff ControlNets (with a 'difference' key) need the base model and "
                                          "are not supported yet")
        if is_diffusers_controlnet(sd.keys()):
            sd = diffusers_controlnet_to_ldm(sd)
        shapes = shapes_of(sd)
        device = devices.compute_device(options)
        kind = detect.file_kind(shapes)
        if kind == "controlnet":
            family, cfg, hint = detect.detect_controlnet(shapes)
            model = build(lambda: ControlNet(hint_channels=hint, **cfg),
                          sub_dict(sd, detect.controlnet_prefix(shapes)), options, "ControlNet")
            dtype = devices.unet_dtype(device, storage_dtype(model), options)
            return ControlModel(model, "controlnet", family, device, dtype,
                                global_average_pooling=name.endswith(("_shuffle", "_shuffle_fp16")))
        if kind == "t2i_adapter":
            sd = t2i_adapter_to_ldm(sd)
            shapes = shapes_of(sd)
            model = build(lambda: t2i_adapter_from_shapes(shapes), sd, options, "T2I-Adapter")
            return ControlModel(model, "t2i_adapter", None, device, devices.unet_dtype(device, storage_dtype(model), options))
        raise detect.UnknownModelFile(f"{os.path.basename(os.fspath(path))} is a {kind} file, "
                                      "not a ControlNet or T2I-Adapter")

    return _cached(path, options, "controlnet", load)


# ---------------------------------------------------------------------------------------------
# Cache by path + modification time

_cache: dict[tuple, Any] = {}
_cache_lock = threading.RLock()


def _cached(path: str | os.PathLike, options: object, what: str, load: Callable[[], Any]) -> Any:
    """Return the cached load result for this file version and options, loading it on a miss."""
    real = os.path.realpath(os.fspath(path))
    stat = os.stat(real)
    flags = tuple(bool(getattr(options, f, False)) for f in ("cpu", "force_fp32", "fp32_text_enc"))
    key = (what, real, stat.st_mtime_ns, stat.st_size, flags)
    with _cache_lock:
        if key not in _cache:
            for old in [k for k in _cache if k[:2] == (what, real)]:
                del _cache[old]  # the file changed: drop the old version
            _cache[key] = load()
        return _cache[key]


def clear_cache() -> None:
    """Forget every loaded model (their weights are freed once no handle uses them)."""
    with _cache_lock:
        _cache.clear()


memory.register_releaser(clear_cache)
