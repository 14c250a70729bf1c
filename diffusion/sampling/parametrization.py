"""The discrete DDPM noise schedule as sigmas, and the eps / v-prediction denoiser parametrizations.

Conventions and reference values: sampling.md §1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


class DiscreteSchedule:
    """SD's 1000-step scaled-linear beta schedule expressed as ascending sigmas (sampling.md §1.1)."""

    sigma_data = 1.0

    def __init__(self, linear_start: float = 0.00085, linear_end: float = 0.012,
                 timesteps: int = 1000, zsnr: bool = False):
        betas = torch.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps,
                               dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        if zsnr:
            sigmas = _rescale_zero_terminal_snr(sigmas)
        self.sigmas = sigmas.to(torch.float32)                     # [T], ascending
        self.log_sigmas = sigmas.log().to(torch.float32)           # log taken in float64 first
        self.num_timesteps = timesteps

    @property
    def sigma_min(self) -> Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> Tensor:
        return self.sigmas[-1]

    def timestep(self, sigma: Tensor) -> Tensor:
        """Index of the nearest table sigma in log space, as float32 (what the UNet sees, §1.2)."""
        log_sigma = torch.as_tensor(sigma, dtype=torch.float32).log()
        dists = log_sigma.reshape(-1, 1) - self.log_sigmas.to(log_sigma.device).reshape(1, -1)
        # argmin returns the first index among ties, matching the spec
        return dists.abs().argmin(dim=1).reshape(log_sigma.shape).to(torch.float32)

    def sigma(self, timestep: Tensor | float) -> Tensor:
        """Log-linear interpolation of the table at a fractional timestep (§1.3)."""
        t = torch.as_tensor(timestep, dtype=torch.float32).clamp(0, self.num_timesteps - 1)
        lo, hi = t.floor().long(), t.ceil().long()
        w = t - t.floor()
        log_sigmas = self.log_sigmas.to(t.device)
        return ((1 - w) * log_sigmas[lo] + w * log_sigmas[hi]).exp()

    def percent_to_sigma(self, percent: float) -> float:
        """Sigma at which a start/end percentage of the schedule is reached (§1.4)."""
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return float(self.sigma((1.0 - percent) * (self.num_timesteps - 1)))


def _rescale_zero_terminal_snr(sigmas: Tensor) -> Tensor:
    """Shift and rescale sqrt(alphas_cumprod) so the last step has zero SNR (§1.1)."""
    a = (1.0 / (sigmas ** 2 + 1)) ** 0.5
    a_first, a_last = a[0].clone(), a[-1].clone()
    a = (a - a_last) * a_first / (a_first - a_last)
    alphas_cumprod = a ** 2
    alphas_cumprod[-1] = 4.8973451890853435e-08
    return ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5


def _bcast(sigma: Tensor, x: Tensor) -> Tensor:
    """Sigma as [B,1,1,...] against x (a one-element sigma acts as a scalar)."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.numel() == 1:
        return sigma.reshape(())
    return sigma.reshape(sigma.shape[:1] + (1,) * (x.ndim - 1))


@dataclass(frozen=True)
class Prediction:
    """What the network outputs (eps or v) and how it maps to the denoised latent (§1.5)."""

    kind: str  # "eps" | "v"

    def calculate_input(self, sigma: Tensor, x: Tensor) -> Tensor:
        """c_in · x: the input scaling the UNet was trained with."""
        return x / (_bcast(sigma, x) ** 2 + 1.0) ** 0.5

    def calculate_denoised(self, sigma: Tensor, out: Tensor, x: Tensor) -> Tensor:
        """c_skip · x + c_out · out, from the un-scaled x."""
        s = _bcast(sigma, x)
        if self.kind == "eps":
            return x - out * s
        if self.kind == "v":
            return x / (s ** 2 + 1.0) - out * s / (s ** 2 + 1.0) ** 0.5
        raise ValueError(f"unknown prediction type {self.kind!r}")

    def noise_scaling(self, sigma: Tensor, noise: Tensor, latent: Tensor,
                      max_denoise: bool) -> Tensor:
        """The starting point x_0 of sampling from the initial noise and the (scaled) latent."""
        s = _bcast(sigma, noise)
        if max_denoise:
            return noise * (1.0 + s ** 2) ** 0.5 + latent
        return noise * s + latent


@dataclass
class ModelSampling:
    """A schedule plus a prediction type: everything that turns a UNet into a denoiser."""

    schedule: DiscreteSchedule
    prediction: Prediction

    @classmethod
    def for_prediction(cls, kind: str, zsnr: bool = False) -> "ModelSampling":
        return cls(_schedule(zsnr), Prediction(kind))


_SCHEDULES: dict[bool, DiscreteSchedule] = {}


def _schedule(zsnr: bool) -> DiscreteSchedule:
    """The SD schedule is the same for every model: build each variant once."""
    if zsnr not in _SCHEDULES:
        _SCHEDULES[zsnr] = DiscreteSchedule(zsnr=zsnr)
    return _SCHEDULES[zsnr]


def is_max_denoise(schedule: DiscreteSchedule, sigmas: Tensor) -> bool:
    """Whether sampling starts at the top of the schedule (then the noise is scaled by √(1+σ²))."""
    sigma_max = float(schedule.sigma_max)
    sigma0 = float(sigmas[0])
    return math.isclose(sigma_max, sigma0, rel_tol=1e-05) or sigma0 > sigma_max
