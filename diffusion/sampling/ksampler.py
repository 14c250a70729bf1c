"""KSampler: from a MODEL, conditioning and a latent to a denoised latent (sampling.md §3, §4, §7).

`sample()` is the contract entry point (docs/contracts.md §3); `ksampler()` adds the node-level
step selection (denoise, start/end steps, add_noise) shared by KSampler and KSamplerAdvanced.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from . import schedules
from .guidance import (CFGDenoiser, MaskedDenoiser, ModelCall, apply_control_to_uncond,
                       match_areas, prepare_conds, prepare_denoise_mask)
from .noise import BrownianTreeNoise, DefaultNoise, initial_noise
from .parametrization import ModelSampling, is_max_denoise
from .samplers import get_sampler

OnStep = Callable[[int, int, Tensor, Tensor], None]  # (step, total, x, denoised)


class NonFiniteLatent(FloatingPointError):
    """Sampling produced NaN or infinite values (a broken model, weights or fp16 overflow)."""


@dataclass(frozen=True)
class SamplerChoice:
    """The SAMPLER wire value: a validated sampler name (KSamplerSelect → SamplerCustom)."""

    name: str


def model_sampling_for(model: Any) -> ModelSampling:
    """The schedule + prediction type of a ModelHandle (`options["sampling"]` may set zsnr)."""
    settings = model.options.get("sampling") or {}
    return ModelSampling.for_prediction(model.prediction, zsnr=bool(settings.get("zsnr", False)))


def _controls(conds: list) -> list:
    seen: list = []
    for c in conds:
        if c.control is not None and not any(c.control is s for s in seen):
            seen.append(c.control)
    return seen


@torch.no_grad()
def sample(model: Any, *, noise: Tensor, positive: list, negative: list, latent: Tensor,
           sigmas: Tensor, sampler_name: str, cfg: float, denoise_mask: Tensor | None = None,
           on_step: OnStep | None = None, seed: int = 0) -> Tensor:
    """Sample `latent` (raw VAE latent [B,4,h,w]) along `sigmas`; returns the raw result (§3.2)."""
    sampler = get_sampler(sampler_name)
    ms = model_sampling_for(model)
    fmt = model.latent_format
    device = model.load_device
    latent = latent.to(torch.float32)
    if torch.count_nonzero(latent) > 0:  # an empty latent is left untouched (§1.7)
        latent = fmt.process_in(latent)
    latent = latent.to(device)
    noise = noise.to(device=device, dtype=torch.float32)
    sigmas = sigmas.to(torch.float32)
    mask = (prepare_denoise_mask(denoise_mask, latent.shape).to(device)
            if denoise_mask is not None else None)

    common = dict(model_sampling=ms, family=model.family, latent=latent, latent_format=fmt,
                  concat_channels=model.config.get("in_channels") == 9, denoise_mask=mask)
    pos = prepare_conds(positive, prompt_type="positive", **common)
    neg = prepare_conds(negative, prompt_type="negative", **common)
    match_areas(pos, neg)
    match_areas(neg, pos)
    apply_control_to_uncond(pos, neg)
    controls = _controls(pos + neg)
    for control in controls:
        if hasattr(control, "prepare"):
            control.prepare(ms.schedule.percent_to_sigma)

    x = ms.prediction.noise_scaling(sigmas[0], noise, latent, is_max_denoise(ms.schedule, sigmas))
    noise_sampler = None
    if sampler.noise == "default":
        noise_sampler = DefaultNoise(x, seed)
    elif sampler.noise in ("brownian", "brownian_device"):
        noise_sampler = BrownianTreeNoise(x, sigmas, seed, on_device=sampler.noise == "brownian_device")

    total = len(sigmas) - 1

    def step_callback(i: int, x_i: Tensor, denoised: Tensor) -> None:
        if not bool(torch.isfinite(x_i).all()):
            raise NonFiniteLatent(f"sampling produced NaN/inf values at step {i + 1} of {total}")
        if on_step is not None:
            on_step(i, total, x_i, denoised)

    try:
        with model.active(device, model.compute_dtype) as unet:
            denoiser: Any = CFGDenoiser(ModelCall(unet, ms, model.compute_dtype), pos, neg, cfg,
                                        always_uncond=sampler.needs_uncond)
            if mask is not None:
                # ddim re-noises the kept region with seed+1 noise instead of the initial noise (§4.5)
                keep_noise = (initial_noise(latent.cpu(), seed + 1).to(device)
                              if sampler_name == "ddim" else noise)
                denoiser = MaskedDenoiser(denoiser, mask, latent, keep_noise)
            out = sampler.fn(denoiser, x, sigmas.to(device), noise=noise_sampler,
                             on_step=step_callback)
    finally:
        for control in controls:
            if hasattr(control, "cleanup"):
                control.cleanup()
    if not bool(torch.isfinite(out).all()):
        raise NonFiniteLatent("sampling produced NaN/inf values in the final latent")
    return fmt.process_out(out.to(torch.float32)).cpu()


def ksampler(model: Any, *, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
             positive: list, negative: list, latent: dict, denoise: float | None = 1.0,
             disable_noise: bool = False, start_step: int | None = None,
             last_step: int | None = None, force_full_denoise: bool = False,
             on_step: OnStep | None = None) -> dict:
    """KSampler / KSamplerAdvanced semantics (§3.1, §3.2): returns a copy of the latent dict."""
    sampler = get_sampler(sampler_name)
    ms = model_sampling_for(model)
    sigmas = schedules.ksampler_sigmas(ms.schedule, scheduler, steps, denoise=denoise,
                                       discard_penultimate=sampler.discard_penultimate)
    sigmas = schedules.cut_sigmas(sigmas, start_step=start_step, last_step=last_step,
                                  force_full_denoise=force_full_denoise)
    return sample_latent(model, seed=seed, cfg=cfg, sampler_name=sampler_name, sigmas=sigmas,
                         positive=positive, negative=negative, latent=latent,
                         add_noise=not disable_noise, on_step=on_step)


def sample_latent(model: Any, *, seed: int, cfg: float, sampler_name: str, sigmas: Tensor,
                  positive: list, negative: list, latent: dict, add_noise: bool = True,
                  on_step: OnStep | None = None) -> dict:
    """Noise from the latent dict's seed/batch_index, then `sample()`; empty sigmas return the input."""
    samples = latent["samples"]
    out = dict(latent)
    if len(sigmas) == 0:
        return out
    if add_noise:
        noise = initial_noise(samples.to(torch.float32), seed, latent.get("batch_index"))
    else:
        noise = torch.zeros(samples.shape, dtype=torch.float32)
    out["samples"] = sample(model, noise=noise, positive=positive, negative=negative,
                            latent=samples, sigmas=sigmas, sampler_name=sampler_name, cfg=cfg,
                            denoise_mask=latent.get("noise_mask"), on_step=on_step, seed=seed)
    return out
