"""Samplers: plain functions of (denoiser, x, sigmas) that integrate the diffusion ODE/SDE.

Each sampler takes a denoiser `D(x, sigma) -> x0 estimate`, the starting latent `x` (already scaled
to the first sigma) and descending `sigmas`, and returns the latent at the last sigma. Step formulas:
sampling.md §5. Noise comes only from the `noise` sampler passed in (§4.3, §4.4).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, Protocol

import numpy as np
import torch
from torch import Tensor

from .noise import NoiseSampler


class Denoiser(Protocol):
    """D(x, sigma): the model's estimate of the clean latent at noise level sigma."""

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor: ...


StepCallback = Callable[[int, Tensor, Tensor], None]  # (step index, x, denoised)


def _denoise_with_uncond(denoise: Denoiser, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
    """(D, D_uncond) for CFG++ samplers; a denoiser without guidance is its own uncond."""
    with_uncond = getattr(denoise, "with_uncond", None)
    if with_uncond is None:
        d = denoise(x, sigma)
        return d, d
    return with_uncond(x, sigma)


def _guided(denoise: Denoiser, x: Tensor, sigma: Tensor, cfg_pp: bool) -> tuple[Tensor, Tensor]:
    """(D, the prediction a step re-noises along): D_uncond for CFG++ samplers, D itself otherwise."""
    if cfg_pp:
        return _denoise_with_uncond(denoise, x, sigma)
    d = denoise(x, sigma)
    return d, d


def _to_d(x: Tensor, sigma: Tensor, denoised: Tensor) -> Tensor:
    """Karras ODE derivative dx/dsigma."""
    return (x - denoised) / sigma


def _ancestral_step(sigma: Tensor, sigma_next: Tensor, eta: float = 1.0) -> tuple[Tensor, Tensor]:
    """Split a step into a deterministic part down to sigma_down and fresh noise sigma_up."""
    if not eta:
        return sigma_next, torch.zeros_like(sigma_next)
    sigma_up = torch.minimum(
        sigma_next, eta * (sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2) ** 0.5)
    sigma_down = (sigma_next ** 2 - sigma_up ** 2) ** 0.5
    return sigma_down, sigma_up


def _report(on_step: StepCallback | None, i: int, x: Tensor, denoised: Tensor) -> None:
    if on_step is not None:
        on_step(i, x, denoised)


# --- Euler family ---------------------------------------------------------------------------------

@torch.no_grad()
def sample_euler(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseSampler | None = None,
                 on_step: StepCallback | None = None) -> Tensor:
    """Euler steps on the probability-flow ODE (Karras et al. 2022, Algorithm 2 without churn)."""
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        x = x + _to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
        _report(on_step, i, x, denoised)
    return x


@torch.no_grad()
def sample_euler_ancestral(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseSampler,
                           on_step: StepCallback | None = None, eta: float = 1.0,
                           s_noise: float = 1.0) -> Tensor:
    """Ancestral Euler: Euler down to sigma_down, then fresh noise (Song et al. 2021 / k-diffusion)."""
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        sigma_down, sigma_up = _ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if sigma_down == 0:
            x = denoised
        else:
            x = x + _to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
        _report(on_step, i, x, denoised)
    return x


@torch.no_grad()
def sample_euler_cfg_pp(denoise: Denoiser, x: Tensor, sigmas: Tensor, *,
                        noise: NoiseSampler | None = None, on_step: StepCallback | None = None,
                        eta: float = 0.0, s_noise: float = 1.0) -> Tensor:
    """Euler with CFG++: re-noise the guided x0 along the unconditional direction (Chung et al. 2024, arXiv 2406.08070)."""
    for i in range(len(sigmas) - 1):
        denoised, uncond = _denoise_with_uncond(denoise, x, sigmas[i])
        sigma_down, sigma_up = _ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = denoised + sigma_down * (x - uncond) / sigmas[i]
            if eta > 0:
                x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
        _report(on_step, i, x, denoised)
    return x


@torch.no_grad()
def sample_euler_ancestral_cfg_pp(denoise: Denoiser, x: Tensor, sigmas: Tensor, *,
                                  noise: NoiseSampler, on_step: StepCallback | None = None) -> Tensor:
    """Ancestral Euler with CFG++ (Chung et al. 2024, arXiv 2406.08070)."""
    return sample_euler_cfg_pp(denoise, x, sigmas, noise=noise, on_step=on_step, eta=1.0)


@torch.no_grad()
def sample_heun(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseSampler | None = None,
                on_step: StepCallback | None = None) -> Tensor:
    """Heun's second-order method (Karras et al. 2022, Algorithm 2 without churn)."""
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        d = _to_d(x, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = _to_d(x_2, sigmas[i + 1], denoise(x_2, sigmas[i + 1]))
            x = x + (d + d_2) / 2 * dt
        _report(on_step, i, x, denoised)
    return x


@torch.no_grad()
def sample_heunpp2(denoise: Denoiser, x: Tensor, sigmas: Tensor, *,
                   noise: NoiseSampler | None = None, on_step: StepCallback | None = None) -> Tensor:
    """Heun++: a sigma-weighted blend of up to three slopes (sd-webui-samplers-scheduler, "heunpp2")."""
    s_max = sigmas[0]
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        d = _to_d(x, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = _to_d(x_2, sigmas[i + 1], denoise(x_2, sigmas[i + 1]))
            if i + 2 >= len(sigmas) or sigmas[i + 2] == 0:
                w2 = sigmas[i + 1] / (2 * s_max)
                d_prime = d * (1 - w2) + d_2 * w2
            else:
                x_3 = x_2 + d_2 * (sigmas[i + 2] - sigmas[i + 1])
                d_3 = _to_d(x_3, sigmas[i + 2], denoise(x_3, sigmas[i + 2]))
                w2, w3 = sigmas[i + 1] / (3 * s_max), sigmas[i + 2] / (3 * s_max)
                d_prime = d * (1 - w2 - w3) + d_2 * w2 + d_3 * w3
            x = x + d_prime * dt
        _report(on_step, i, x, denoised)
    return x


@torch.no_grad()
def sample_dpm_2(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseSampler | None = None,
                 on_step: StepCallback | None = None) -> Tensor:
    """DPM-Solver-2 style midpoint step in log sigma (Lu et al. 2022, arXiv 2206.00927; k-diffusion form)."""
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        d = _to_d(x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigmas[i + 1].log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            d_2 = _to_d(x_2, sigma_mid, denoise(x_2, sigma_mid))
            x = x + d_2 * (sigmas[i + 1] - sigmas[i])
        _report(on_step, i, x, denoised)
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseSampler,
                           on_step: StepCallback | None = None, eta: float = 1.0,
                           s_noise: float = 1.0) -> Tensor:
    """Ancestral DPM-Solver-2 midpoint steps (Lu et al. 2022, arXiv 2206.00927; k-diffusion form)."""
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        sigma_down, sigma_up = _ancestral_step(sigmas[i], sigmas[i + 1], eta)
        d = _to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigma_down.log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            d_2 = _to_d(x_2, sigma_mid, denoise(x_2, sigma_mid))
            x = x + d_2 * (sigma_down - sigmas[i])
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
        _report(on_step, i, x, denoised)
    return x


# --- linear multistep in sigma --------------------------------------------------------------------

def _lms_coefficient(order: int, t: np.ndarray, i: int, j: int) -> float:
    """∫_{σ_i}^{σ_{i+1}} of the j-th Lagrange basis polynomial through the last `order` sigmas."""
    poly = np.poly1d([1.0])
    for m in range(order):
        if m != j:
            poly *= np.poly1d([1.0, -t[i - m]]) / (t[i - j] - t[i - m])
    antiderivative = poly.integ()
    return float(antiderivative(t[i + 1]) - antiderivative(t[i]))


@torch.no_grad()
def sample_lms(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseSampler | None = None,
               on_step: StepCallback | None = None, order: int = 4) -> Tensor:
    """Linear multistep (Adams–Bashforth in sigma, variable steps; Karras et al. 2022 / k-diffusion)."""
    # The integrand is a polynomial, so it is integrated exactly rather than by quadrature.
    t = sigmas.detach().cpu().double().numpy()
    ds: list[Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        ds.append(_to_d(x, sigmas[i], denoised))
        ds = ds[-order:]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            k = min(i + 1, order)
            coeffs = [_lms_coefficient(k, t, i, j) for j in range(k)]
            x = x + sum(c * d for c, d in zip(coeffs, reversed(ds)))
        _report(on_step, i, x, denoised)
    return x


# --- DPM-Solver (fast / adaptive) -----------------------------------------------------------------

class _DPMSolver:
    """DPM-Solver 1/2/3 steps in t = -ln(sigma) with an eps model (Lu et al. 2022, arXiv 2206.00927)."""

    def __init__(self, denoise: Denoiser, on_step: StepCallback | None):
        self.denoise, self.on_step, self.nfe = denoise, on_step, 0

    @staticmethod
    def sigma(t: Tensor) -> Tensor:
        return (-t).exp()

    def eps(self, cache: dict, key: str, x: Tensor, t: Tensor) -> Tensor:
        if key not in cache:
            sigma = self.sigma(t)
            denoised = self.denoise(x, sigma)
            cache[key] = (x - denoised) / sigma
            if key == "eps":
                _report(self.on_step, self.nfe, x, denoised)
            self.nfe += 1
        return cache[key]

    def step_1(self, x: Tensor, t: Tensor, t_next: Tensor, cache: dict) -> Tensor:
        h = t_next - t
        return x - self.sigma(t_next) * h.expm1() * self.eps(cache, "eps", x, t)

    def step_2(self, x: Tensor, t: Tensor, t_next: Tensor, cache: dict, r1: float = 0.5) -> Tensor:
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        return (x - self.sigma(t_next) * h.expm1() * eps
                - self.sigma(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps))

    def step_3(self, x: Tensor, t: Tensor, t_next: Tensor, cache: dict,
               r1: float = 1 / 3, r2: float = 2 / 3) -> Tensor:
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        u2 = (x - self.sigma(s2) * (r2 * h).expm1() * eps
              - self.sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps))
        eps_r2 = self.eps(cache, "eps_r2", u2, s2)
        return (x - self.sigma(t_next) * h.expm1() * eps
                - self.sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps))


def _dpm_endpoints(sigmas: Tensor) -> tuple[Tensor, Tensor]:
    """First sigma and last non-zero sigma: DPM-Solver ignores the rest of the schedule."""
    sigma_min = sigmas[-1] if sigmas[-1] > 0 else sigmas[-2]
    return sigmas[0], sigma_min


@torch.no_grad()
def sample_dpm_fast(denoise: Denoiser, x: Tensor, sigmas: Tensor, *,
                    noise: NoiseSampler | None = None, on_step: StepCallback | None = None) -> Tensor:
    """DPM-Solver-fast: uniform logSNR steps of orders 3,…,3,2,1 (Lu et al. 2022, arXiv 2206.00927)."""
    if len(sigmas) <= 1:
        return x
    steps = len(sigmas) - 1
    sigma_max, sigma_min = _dpm_endpoints(sigmas)
    solver = _DPMSolver(denoise, on_step)
    m = steps // 3 + 1
    ts = torch.linspace(float(-sigma_max.log()), float(-sigma_min.log()), m + 1)
    orders = [3] * (m - 2) + [2, 1] if steps % 3 == 0 else [3] * (m - 1) + [steps % 3]
    for i, order in enumerate(orders):
        cache: dict = {}
        t, t_next = ts[i], ts[i + 1]
        step = {1: solver.step_1, 2: solver.step_2, 3: solver.step_3}[order]
        x = step(x, t, t_next, cache)
    return x


@torch.no_grad()
def sample_dpm_adaptive(denoise: Denoiser, x: Tensor, sigmas: Tensor, *,
                        noise: NoiseSampler | None = None, on_step: StepCallback | None = None,
                        order: int = 3, rtol: float = 0.05, atol: float = 0.0078,
                        h_init: float = 0.05, accept_safety: float = 0.81) -> Tensor:
    """DPM-Solver-23 with adaptive step size and an integral step controller (Lu et al. 2022, arXiv 2206.00927)."""
    if len(sigmas) <= 1:
        return x
    sigma_max, sigma_min = _dpm_endpoints(sigmas)
    solver = _DPMSolver(denoise, on_step)
    s, t_end = -sigma_max.log(), -sigma_min.log()
    h = h_init
    x_prev = x
    while float(s) < float(t_end) - 1e-5:
        t = torch.minimum(t_end, s + h)
        cache: dict = {}
        if order == 2:
            x_low = solver.step_1(x, s, t, cache)
            x_high = solver.step_2(x, s, t, cache)
        else:
            x_low = solver.step_2(x, s, t, cache, r1=1 / 3)
            x_high = solver.step_3(x, s, t, cache)
        delta = torch.maximum(torch.full_like(x_low, atol),
                              rtol * torch.maximum(x_low.abs(), x_prev.abs()))
        error = float(torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5)
        # Integral controller (PID with p = d = 0): scale h by error^(-1/order), softly limited.
        factor = 1 + math.atan((1 / (error + 1e-8)) ** (1 / order) - 1)
        if factor >= accept_safety:
            x_prev, x, s = x_low, x_high, t
        h *= factor
    return x


# --- DPM-Solver++ family --------------------------------------------------------------------------

@torch.no_grad()
def sample_dpmpp_2s_ancestral(denoise: Denoiser, x: Tensor, sigmas: Tensor, *,
                              noise: NoiseSampler, on_step: StepCallback | None = None,
                              eta: float = 1.0, s_noise: float = 1.0, cfg_pp: bool = False) -> Tensor:
    """Ancestral DPM-Solver++(2S) (Lu et al. 2022b, arXiv 2211.01095); CFG++ starts from x + D − D_uncond."""
    for i in range(len(sigmas) - 1):
        denoised, uncond = _guided(denoise, x, sigmas[i], cfg_pp)
        sigma_down, sigma_up = _ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if sigma_down == 0:
            x = denoised if cfg_pp else x + _to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = -sigmas[i].log(), -sigma_down.log()
            h = t_next - t
            sigma_s = (-(t + h / 2)).exp()
            start = x + (denoised - uncond) if cfg_pp else x
            x_2 = (sigma_s / sigmas[i]) * start - (-h / 2).expm1() * denoised
            denoised_2 = denoise(x_2, sigma_s)
            x = (sigma_down / sigmas[i]) * start - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
        _report(on_step, i, x, denoised)
    return x


@torch.no_grad()
def sample_dpmpp_2s_ancestral_cfg_pp(denoise: Denoiser, x: Tensor, sigmas: Tensor, *,
                                     noise: NoiseSampler, on_step: StepCallback | None = None) -> Tensor:
    """Ancestral DPM-Solver++(2S) with CFG++ (Chung et al. 2024, arXiv 2406.08070)."""
    return sample_dpmpp_2s_ancestral(denoise, x, sigmas, noise=noise, on_step=on_step, cfg_pp=True)


@torch.no_grad()
def sample_dpmpp_sde(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseSampler,
                     on_step: StepCallback | None = None, eta: float = 1.0, s_noise: float = 1.0,
                     r: float = 0.5) -> Tensor:
    """DPM-Solver++ stochastic two-stage steps with Brownian noise (Lu et al. 2022b, arXiv 2211.01095)."""
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lam_s, lam_t = -sigmas[i].log(), -sigmas[i + 1].log()
            h = lam_t - lam_s
            sigma_1 = (-(lam_s + r * h)).exp()
            fac = 1 / (2 * r)
            sd, su = _ancestral_step(sigmas[i], sigma_1, eta)
            h_ = -sd.log() - lam_s
            x_2 = (-h_).exp() * x - (-h_).expm1() * denoised
            if eta > 0 and s_noise > 0:
                x_2 = x_2 + noise(sigmas[i], sigma_1) * s_noise * su
            denoised_2 = denoise(x_2, sigma_1)
            sd, su = _ancestral_step(sigmas[i], sigmas[i + 1], eta)
            h_ = -sd.log() - lam_s
            denoised_d = (1 - fac) * denoised + fac * denoised_2
            x = (-h_).exp() * x - (-h_).expm1() * denoised_d
            if eta > 0 and s_noise > 0:
                x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * su
        _report(on_step, i, x, denoised)
    return x


@torch.no_grad()
def sample_dpmpp_2m(denoise: Denoiser, x: Tensor, sigmas: Tensor, *,
                    noise: NoiseSampler | None = None, on_step: StepCallback | None = None) -> Tensor:
    """DPM-Solver++(2M) multistep (Lu et al. 2022b, arXiv 2211.01095)."""
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        t, t_next = -sigmas[i].log(), -sigmas[i + 1].log()
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * denoised
        else:
            r = (t - (-sigmas[i - 1].log())) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
        _report(on_step, i, x, denoised)
    return x


@torch.no_grad()
def sample_dpmpp_2m_cfg_pp(denoise: Denoiser, x: Tensor, sigmas: Tensor, *,
                           noise: NoiseSampler | None = None,
                           on_step: StepCallback | None = None) -> Tensor:
    """DPM-Solver++(2M) with CFG++ (Lu et al. 2022b, arXiv 2211.01095; Chung et al. 2024, arXiv 2406.08070)."""
    old_uncond = None
    for i in range(len(sigmas) - 1):
        denoised, uncond = _denoise_with_uncond(denoise, x, sigmas[i])
        h = sigmas[i].log() - sigmas[i + 1].log()
        e_h = (-h).exp()
        if old_uncond is None or sigmas[i + 1] == 0:
            m = -e_h * uncond
        else:
            r = (sigmas[i - 1].log() - sigmas[i].log()) / h
            m = -e_h * uncond - (-h).expm1() * (1 / (2 * r)) * (denoised - old_uncond)
        x = denoised + m + e_h * x
        old_uncond = uncond
        _report(on_step, i, x, denoised)
    return x


def _dpmpp_2m_sde(denoise: Denoiser, x: Tensor, sigmas: Tensor, noise: NoiseSampler,
                  on_step: StepCallback | None, solver: Literal["midpoint", "heun"],
                  eta: float = 1.0, s_noise: float = 1.0) -> Tensor:
    old_denoised, h_last = None, None
    h = None
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = sigmas[i].log() - sigmas[i + 1].log()
            eta_h = eta * h + h
            x = (sigmas[i + 1] / sigmas[i]) * (-h * eta).exp() * x + (-(-eta_h).expm1()) * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver == "heun":
                    x = x + ((-(-eta_h).expm1()) / (-eta_h) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * (-(-eta_h).expm1()) * (1 / r) * (denoised - old_denoised)
            if eta:
                x = x + (noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1]
                         * (-(-2 * eta * h).expm1()).sqrt() * s_noise)
        old_denoised, h_last = denoised, h
        _report(on_step, i, x, denoised)
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseSampler,
                        on_step: StepCallback | None = None) -> Tensor:
    """DPM-Solver++(2M) SDE, midpoint correction (Lu et al. 2022b, arXiv 2211.01095)."""
    return _dpmpp_2m_sde(denoise, x, sigmas, noise, on_step, "midpoint")


@torch.no_grad()
def sample_dpmpp_2m_sde_heun(denoise: Denoiser, x: Tensor, sigmas: Tensor, *,
                             noise: NoiseSampler, on_step: StepCallback | None = None) -> Tensor:
    """DPM-Solver++(2M) SDE, Heun correction (Lu et al. 2022b, arXiv 2211.01095)."""
    return _dpmpp_2m_sde(denoise, x, sigmas, noise, on_step, "heun")


@torch.no_grad()
def sample_dpmpp_3m_sde(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseSampler,
                        on_step: StepCallback | None = None, eta: float = 1.0,
                        s_noise: float = 1.0) -> Tensor:
    """DPM-Solver++(3M) SDE multistep (Lu et al. 2022b, arXiv 2211.01095)."""
    denoised_1 = denoised_2 = None
    h = h_1 = h_2 = None
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = sigmas[i].log() - sigmas[i + 1].log()
            h_eta = h * (eta + 1)
            x = (sigmas[i + 1] / sigmas[i]) * (-h * eta).exp() * x + (-(-h_eta).expm1()) * denoised
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = (-h_eta).expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                r = h_1 / h
                phi_2 = (-h_eta).expm1() / h_eta + 1
                x = x + phi_2 * (denoised - denoised_1) / r
            if eta:
                x = x + (noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1]
                         * (-(-2 * h * eta).expm1()).sqrt() * s_noise)
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
        _report(on_step, i, x, denoised)
    return x


# --- DDPM / LCM -----------------------------------------------------------------------------------

@torch.no_grad()
def sample_ddpm(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseSampler,
                on_step: StepCallback | None = None) -> Tensor:
    """Ancestral sampling from the DDPM posterior q(x_{t-1} | x_t, x_0) (Ho et al. 2020)."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoise(x, sigma)
        v = x / (1 + sigma ** 2) ** 0.5
        eps = (x - denoised) / sigma
        alpha_cumprod = 1 / (sigma ** 2 + 1)
        alpha_cumprod_prev = 1 / (sigma_next ** 2 + 1)
        alpha = alpha_cumprod / alpha_cumprod_prev
        mu = (1.0 / alpha).sqrt() * (v - (1 - alpha) * eps / (1 - alpha_cumprod).sqrt())
        if sigma_next > 0:
            mu = mu + ((1 - alpha) * (1.0 - alpha_cumprod_prev) / (1.0 - alpha_cumprod)).sqrt() \
                * noise(sigma, sigma_next)
            x = mu * (1 + sigma_next ** 2) ** 0.5
        else:
            x = mu
        _report(on_step, i, x, denoised)
    return x


@torch.no_grad()
def sample_lcm(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseSampler,
               on_step: StepCallback | None = None) -> Tensor:
    """Latent Consistency Model multistep sampling: jump to x0, re-noise (Luo et al. 2023)."""
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        x = denoised
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * noise(sigmas[i], sigmas[i + 1])
        _report(on_step, i, x, denoised)
    return x


# --- pseudo-numerical / exponential-integrator multistep -----------------------------------------

@torch.no_grad()
def sample_ipndm(denoise: Denoiser, x: Tensor, sigmas: Tensor, *,
                 noise: NoiseSampler | None = None, on_step: StepCallback | None = None,
                 max_order: int = 4) -> Tensor:
    """Improved PNDM with fixed Adams–Bashforth weights (Zhang & Chen 2022, DEIS, arXiv 2204.13902)."""
    history: list[Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        d = _to_d(x, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        order = min(max_order, i + 1)
        if sigmas[i + 1] == 0:
            x = denoised
        elif order == 1:
            x = x + dt * d
        elif order == 2:
            x = x + dt * (3 * d - history[-1]) / 2
        elif order == 3:
            x = x + dt * (23 * d - 16 * history[-1] + 5 * history[-2]) / 12
        else:
            x = x + dt * (55 * d - 59 * history[-1] + 37 * history[-2] - 9 * history[-3]) / 24
        history = (history + [d])[-(max_order - 1):]
        _report(on_step, i, x, denoised)
    return x


@torch.no_grad()
def sample_ipndm_v(denoise: Denoiser, x: Tensor, sigmas: Tensor, *,
                   noise: NoiseSampler | None = None, on_step: StepCallback | None = None,
                   max_order: int = 4) -> Tensor:
    """Variable-step improved PNDM (Zhang & Chen 2022, DEIS, arXiv 2204.13902)."""
    history: list[Tensor] = []
    s = [float(v) for v in sigmas]
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        d = _to_d(x, sigmas[i], denoised)
        h0 = s[i + 1] - s[i]
        order = min(max_order, i + 1)
        if s[i + 1] == 0:
            x = denoised
        elif order == 1:
            x = x + h0 * d
        elif order == 2:
            h1 = s[i] - s[i - 1]
            c1, c2 = (2 + h0 / h1) / 2, -(h0 / h1) / 2
            x = x + h0 * (c1 * d + c2 * history[-1])
        else:
            h1, h2 = s[i] - s[i - 1], s[i - 1] - s[i - 2]
            t1 = (1 - h0 / (3 * (h0 + h1)) * (h0 * (h0 + h1)) / (h1 * (h1 + h2))) / 2
            if order == 3:
                c1 = (2 + h0 / h1) / 2 + t1
                c2 = -(h0 / h1) / 2 - (1 + h1 / h2) * t1
                c3 = t1 * h1 / h2
                x = x + h0 * (c1 * d + c2 * history[-1] + c3 * history[-2])
            else:
                h3 = s[i - 2] - s[i - 3]
                r = h1 * (h1 + h2) / (h2 * (h2 + h3))
                t2 = (((1 - h0 / (3 * (h0 + h1))) / 2
                       + (1 - h0 / (2 * (h0 + h1))) * h0 / (6 * (h0 + h1 + h2)))
                      * (h0 * (h0 + h1) * (h0 + h1 + h2)) / (h1 * (h1 + h2) * (h1 + h2 + h3)))
                c1 = (2 + h0 / h1) / 2 + t1 + t2
                c2 = -(h0 / h1) / 2 - (1 + h1 / h2) * t1 - (1 + h1 / h2 + r) * t2
                c3 = t1 * h1 / h2 + (h1 / h2 + r * (1 + h2 / h3)) * t2
                c4 = -t2 * r * h1 / h2
                x = x + h0 * (c1 * d + c2 * history[-1] + c3 * history[-2] + c4 * history[-3])
        history = (history + [d])[-(max_order - 1):]
        _report(on_step, i, x, denoised)
    return x


def _deis_coefficients(sigmas: Tensor, max_order: int) -> list[list[float]]:
    """DEIS "tAB" weights: ∫ dσ/dτ · Lagrange basis over VP time τ, per step (§5.3)."""
    eps_s, s_lo, s_hi = 1e-3, 0.002, 80.0
    beta_d = 2 * (math.log(s_lo ** 2 + 1) / eps_s - math.log(s_hi ** 2 + 1)) / (eps_s - 1)
    beta_min = math.log(s_hi ** 2 + 1) - 0.5 * beta_d
    sig = sigmas.detach().cpu().double().numpy()
    ts = (np.sqrt(beta_min ** 2 + 2 * beta_d * np.log(sig ** 2 + 1)) - beta_min) / beta_d
    b0, b1 = beta_min, beta_d + beta_min

    def g(tau: np.ndarray) -> np.ndarray:
        alpha = np.exp(-0.5 * tau ** 2 * (b1 - b0) - tau * b0)
        return 0.5 * (tau * (b1 - b0) + b0) / np.sqrt(alpha * (1 - alpha))

    coeffs: list[list[float]] = []
    n = 10000
    for i in range(len(sig) - 1):
        order = min(i + 1, max_order)
        if sig[i + 1] == 0 or order == 1:
            coeffs.append([float(sig[i + 1] - sig[i])])
            continue
        tau = np.linspace(ts[i], ts[i + 1], n)
        dtau = (ts[i + 1] - ts[i]) / n
        row = []
        for j in range(order):
            basis = np.ones_like(tau)
            for m in range(order):
                if m != j:
                    basis *= (tau - ts[i - m]) / (ts[i - j] - ts[i - m])
            row.append(float(np.sum(g(tau) * basis * dtau)))
        coeffs.append(row)
    return coeffs


@torch.no_grad()
def sample_deis(denoise: Denoiser, x: Tensor, sigmas: Tensor, *,
                noise: NoiseSampler | None = None, on_step: StepCallback | None = None,
                max_order: int = 3) -> Tensor:
    """DEIS, time-quadratic Adams–Bashforth "tAB" mode (Zhang & Chen 2022, arXiv 2204.13902)."""
    coeffs = _deis_coefficients(sigmas, max_order)
    history: list[Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        d = _to_d(x, sigmas[i], denoised)
        history = (history + [d])[-max_order:]
        x = x + sum(c * h for c, h in zip(coeffs[i], reversed(history)))
        _report(on_step, i, x, denoised)
    return x


def _phi1(z: Tensor) -> Tensor:
    return z.expm1() / z


def _phi2(z: Tensor) -> Tensor:
    return (_phi1(z) - 1) / z


def _res_multistep(denoise: Denoiser, x: Tensor, sigmas: Tensor, noise: NoiseSampler | None,
                   on_step: StepCallback | None, eta: float, s_noise: float = 1.0, cfg_pp: bool = False) -> Tensor:
    """RES multistep; with `cfg_pp` (CFG++) x first takes the guidance D − D_uncond and steps follow D_uncond."""
    old_denoised, old_sigma_down = None, None
    for i in range(len(sigmas) - 1):
        denoised, uncond = _guided(denoise, x, sigmas[i], cfg_pp)
        sigma_down, sigma_up = _ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if sigma_down == 0 or old_denoised is None:
            if cfg_pp:
                x = denoised + _to_d(x, sigmas[i], uncond) * sigma_down
            else:
                x = x + _to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = -sigmas[i].log(), -sigma_down.log()
            t_prev, t_old = -sigmas[i - 1].log(), -old_sigma_down.log()
            h = t_next - t
            c2 = (t_prev - t_old) / h
            b1 = torch.nan_to_num(_phi1(-h) - _phi2(-h) / c2)
            b2 = torch.nan_to_num(_phi2(-h) / c2)
            if cfg_pp:
                x = x + (denoised - uncond)
            x = (-h).exp() * x + h * (b1 * uncond + b2 * old_denoised)
        if sigmas[i + 1] > 0 and eta > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
        old_denoised, old_sigma_down = uncond, sigma_down
        _report(on_step, i, x, denoised)
    return x


@torch.no_grad()
def sample_res_multistep(denoise: Denoiser, x: Tensor, sigmas: Tensor, *,
                         noise: NoiseSampler | None = None,
                         on_step: StepCallback | None = None) -> Tensor:
    """RES second-order exponential multistep (Zhang et al. 2023, arXiv 2308.02157)."""
    return _res_multistep(denoise, x, sigmas, noise, on_step, eta=0.0)


@torch.no_grad()
def sample_res_multistep_cfg_pp(denoise: Denoiser, x: Tensor, sigmas: Tensor, *,
                                noise: NoiseSampler | None = None,
                                on_step: StepCallback | None = None) -> Tensor:
    """RES multistep with CFG++ (Zhang et al. 2023; Chung et al. 2024, arXiv 2406.08070)."""
    return _res_multistep(denoise, x, sigmas, noise, on_step, eta=0.0, cfg_pp=True)


@torch.no_grad()
def sample_res_multistep_ancestral(denoise: Denoiser, x: Tensor, sigmas: Tensor, *,
                                   noise: NoiseSampler,
                                   on_step: StepCallback | None = None) -> Tensor:
    """Ancestral RES multistep (Zhang et al. 2023, arXiv 2308.02157)."""
    return _res_multistep(denoise, x, sigmas, noise, on_step, eta=1.0)


@torch.no_grad()
def sample_res_multistep_ancestral_cfg_pp(denoise: Denoiser, x: Tensor, sigmas: Tensor, *,
                                          noise: NoiseSampler,
                                          on_step: StepCallback | None = None) -> Tensor:
    """Ancestral RES multistep with CFG++ (Zhang et al. 2023; Chung et al. 2024, arXiv 2406.08070)."""
    return _res_multistep(denoise, x, sigmas, noise, on_step, eta=1.0, cfg_pp=True)


@torch.no_grad()
def sample_gradient_estimation(denoise: Denoiser, x: Tensor, sigmas: Tensor, *,
                               noise: NoiseSampler | None = None, on_step: StepCallback | None = None,
                               ge_gamma: float = 2.0, cfg_pp: bool = False) -> Tensor:
    """Gradient estimation (Permenter & Yuan 2024, "Interpreting and improving diffusion models from an optimization perspective")."""
    old_d = None
    for i in range(len(sigmas) - 1):
        denoised, uncond = _guided(denoise, x, sigmas[i], cfg_pp)
        d = _to_d(x, sigmas[i], uncond)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = denoised + d * sigmas[i + 1] if cfg_pp else x + d * dt
            if old_d is not None:
                x = x + (ge_gamma - 1) * (d - old_d) * dt
        old_d = d
        _report(on_step, i, x, denoised)
    return x


@torch.no_grad()
def sample_gradient_estimation_cfg_pp(denoise: Denoiser, x: Tensor, sigmas: Tensor, *,
                                      noise: NoiseSampler | None = None,
                                      on_step: StepCallback | None = None) -> Tensor:
    """Gradient estimation with CFG++ (Chung et al. 2024, arXiv 2406.08070)."""
    return sample_gradient_estimation(denoise, x, sigmas, noise=noise, on_step=on_step, cfg_pp=True)


def _ou_noise(previous: Tensor | None, decay_h: Tensor, eta: float, fresh: Tensor) -> Tensor:
    """Unit-σ noise of an Ornstein–Uhlenbeck path in log-SNR: decay what was drawn, add the rest."""
    factor = (-eta * decay_h).exp()
    added = (-(-2 * eta * decay_h).expm1()).sqrt() * fresh
    return added if previous is None else previous * factor + added


def _seeds_2(denoise: Denoiser, x: Tensor, sigmas: Tensor, noise: NoiseSampler | None,
             on_step: StepCallback | None, eta: float, r: float, solver: Literal["phi_1", "phi_2"],
             s_noise: float = 1.0) -> Tensor:
    # x_t = (σ_t/σ_s)·e^{-ηh}·x + ∫ (1+η)e^{-(1+η)(λ_t-λ)} D(λ) dλ + σ_t·√(1-e^{-2ηh})·ξ, with D
    # linear in λ through D(λ_s) and D(λ_s + r·h); the noise of both stages is one OU path.
    stochastic = eta > 0 and s_noise > 0
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = sigmas[i].log() - sigmas[i + 1].log()
            h_eta = h * (eta + 1)
            sigma_1 = sigmas[i] * (-r * h).exp()
            x_2 = (sigma_1 / sigmas[i]) * (-r * h * eta).exp() * x - (-r * h_eta).expm1() * denoised
            path = None
            if stochastic:
                path = _ou_noise(None, r * h, eta, noise(sigmas[i], sigma_1))
                x_2 = x_2 + path * sigma_1 * s_noise
            denoised_2 = denoise(x_2, sigma_1)
            if solver == "phi_1":
                fac = 1 / (2 * r)
                update = -(-h_eta).expm1() * ((1 - fac) * denoised + fac * denoised_2)
            else:
                b2 = h_eta * _phi2(-h_eta) / r
                update = -(-h_eta).expm1() * denoised + b2 * (denoised_2 - denoised)
            x = (sigmas[i + 1] / sigmas[i]) * (-h * eta).exp() * x + update
            if stochastic:
                path = _ou_noise(path, (1 - r) * h, eta, noise(sigma_1, sigmas[i + 1]))
                x = x + path * sigmas[i + 1] * s_noise
        _report(on_step, i, x, denoised)
    return x


@torch.no_grad()
def sample_seeds_2(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseSampler,
                   on_step: StepCallback | None = None) -> Tensor:
    """SEEDS-2, stochastic exponential 2-stage solver (Gonzalez et al. 2023, arXiv 2305.14267)."""
    return _seeds_2(denoise, x, sigmas, noise, on_step, eta=1.0, r=0.5, solver="phi_1")


@torch.no_grad()
def sample_exp_heun_2_x0(denoise: Denoiser, x: Tensor, sigmas: Tensor, *,
                         noise: NoiseSampler | None = None,
                         on_step: StepCallback | None = None) -> Tensor:
    """Exponential Heun in x0 / log-SNR, SEEDS-2 with eta 0, r 1, phi_2 (Gonzalez et al. 2023, arXiv 2305.14267)."""
    return _seeds_2(denoise, x, sigmas, noise, on_step, eta=0.0, r=1.0, solver="phi_2")


@torch.no_grad()
def sample_exp_heun_2_x0_sde(denoise: Denoiser, x: Tensor, sigmas: Tensor, *,
                             noise: NoiseSampler, on_step: StepCallback | None = None) -> Tensor:
    """Stochastic exponential Heun in x0, SEEDS-2 with eta 1, r 1, phi_2 (Gonzalez et al. 2023, arXiv 2305.14267)."""
    return _seeds_2(denoise, x, sigmas, noise, on_step, eta=1.0, r=1.0, solver="phi_2")


@torch.no_grad()
def sample_seeds_3(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseSampler,
                   on_step: StepCallback | None = None, eta: float = 1.0, s_noise: float = 1.0,
                   r_1: float = 1 / 3, r_2: float = 2 / 3) -> Tensor:
    """SEEDS-3, stochastic exponential 3-stage solver (Gonzalez et al. 2023, arXiv 2305.14267)."""
    stochastic = eta > 0 and s_noise > 0
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = sigmas[i].log() - sigmas[i + 1].log()
            h_eta = h * (eta + 1)
            sigma_1, sigma_2 = sigmas[i] * (-r_1 * h).exp(), sigmas[i] * (-r_2 * h).exp()

            def base(r: float) -> Tensor:
                return ((-r * h).exp() * (-r * h * eta).exp() * x
                        - (-r * h_eta).expm1() * denoised)

            x_2 = base(r_1)
            path = None
            if stochastic:
                path = _ou_noise(None, r_1 * h, eta, noise(sigmas[i], sigma_1))
                x_2 = x_2 + path * sigma_1 * s_noise
            denoised_2 = denoise(x_2, sigma_1)
            x_3 = base(r_2) + r_2 * h_eta * _phi2(-r_2 * h_eta) / r_1 * (denoised_2 - denoised)
            if stochastic:
                path = _ou_noise(path, (r_2 - r_1) * h, eta, noise(sigma_1, sigma_2))
                x_3 = x_3 + path * sigma_2 * s_noise
            denoised_3 = denoise(x_3, sigma_2)
            x = base(1.0) + h_eta * _phi2(-h_eta) / r_2 * (denoised_3 - denoised)
            if stochastic:
                path = _ou_noise(path, (1 - r_2) * h, eta, noise(sigma_2, sigmas[i + 1]))
                x = x + path * sigmas[i + 1] * s_noise
        _report(on_step, i, x, denoised)
    return x


def _er_sde_noise_scaler(x: Tensor) -> Tensor:
    """ER-SDE's default noise scaler φ(λ) = λ·(e^{λ^0.3} + 10)."""
    return x * ((x ** 0.3).exp() + 10.0)


@torch.no_grad()
def sample_er_sde(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseSampler,
                  on_step: StepCallback | None = None, s_noise: float = 1.0, max_stage: int = 3,
                  num_points: int = 200) -> Tensor:
    """ER-SDE-Solver-3 with Taylor terms integrated numerically (Cui et al. 2023, arXiv 2309.06169)."""
    # Exact solution of the ER-SDE in x0 form (VE, λ = σ): x_t = r·x_s − φ_t ∫ φ'/φ² D dλ + noise
    # with r = φ(λ_t)/φ(λ_s); expanding D in λ and integrating by parts leaves ∫ 1/φ and ∫ u/φ.
    phi = _er_sde_noise_scaler
    lambdas = sigmas
    offsets = torch.arange(num_points, dtype=torch.float32, device=x.device)
    old_denoised = old_d1 = None
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        stage = min(max_stage, i + 1)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lam_s, lam_t = lambdas[i], lambdas[i + 1]
            r = phi(lam_t) / phi(lam_s)
            x = r * x + (1 - r) * denoised
            if stage >= 2:
                dt = lam_t - lam_s
                step = -dt / num_points
                pos = lam_t + offsets * step           # Riemann points from λ_t up to λ_s
                scaled = phi(pos)
                int_inv = torch.sum(1 / scaled) * step  # ∫_{λ_t}^{λ_s} 1/φ
                d1 = (denoised - old_denoised) / (lam_s - lambdas[i - 1])
                x = x + (dt + int_inv * phi(lam_t)) * d1
                if stage >= 3:
                    int_u = torch.sum((pos - lam_s) / scaled) * step
                    d2 = (d1 - old_d1) / ((lam_s - lambdas[i - 2]) / 2)
                    x = x + (dt ** 2 / 2 + int_u * phi(lam_t)) * d2
                old_d1 = d1
            if s_noise > 0:
                std = (lam_t ** 2 - lam_s ** 2 * r ** 2).sqrt().nan_to_num(nan=0.0)
                x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * std
        old_denoised = denoised
        _report(on_step, i, x, denoised)
    return x


_GAUSS_NODES, _GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(32)


def _sa_coefficients(lams: list[float], lam_s: float, lam_t: float, tau: float) -> list[float]:
    """∫_{λ_s}^{λ_t} (1+τ²)·e^{(1+τ²)(λ−λ_t)}·ℓ_j(λ) dλ for the Lagrange basis ℓ_j through `lams`."""
    a = 1 + tau ** 2
    half = (lam_t - lam_s) / 2
    pts = lam_s + half * (_GAUSS_NODES + 1)
    weight = a * np.exp(a * (pts - lam_t)) * half * _GAUSS_WEIGHTS
    coeffs = []
    for j, lj in enumerate(lams):
        basis = np.ones_like(pts)
        for m, lm in enumerate(lams):
            if m != j:
                basis *= (pts - lm) / (lj - lm)
        coeffs.append(float(np.sum(weight * basis)))
    return coeffs


def _sa_solver(denoise: Denoiser, x: Tensor, sigmas: Tensor, noise: NoiseSampler,
               on_step: StepCallback | None, pece: bool, predictor_order: int = 3,
               corrector_order: int = 4, tau_range: tuple[float, float] = (0.5711888670921326,
                                                                          5.092408180236816),
               s_noise: float = 1.0) -> Tensor:
    # x_t = (σ_t/σ_s)·e^{−τ²h}·x_s + Σ_j b_j·D_j + σ_t·√(1−e^{−2τ²h})·ξ with b_j the exponentially
    # weighted integrals of a Lagrange interpolant of D in λ = −ln σ; the corrector refits the
    # interpolant including D at the predicted point and reuses the step's noise.
    s = [float(v) for v in sigmas]
    lams = [-math.log(v) if v > 0 else math.inf for v in s]
    hist_d: list[Tensor] = []
    hist_lam: list[float] = []
    pending = None  # (base, noise_term, lam_s, lam_t, tau) of the step that produced x_pred
    x_pred = x
    for i in range(len(sigmas) - 1):
        denoised = denoise(x_pred, sigmas[i])
        if pending is not None:
            base, noise_term, lam_s, lam_t, tau = pending
            order = min(corrector_order, len(hist_d) + 1)
            points = [lam_t] + hist_lam[::-1][:order - 1]
            values = [denoised] + hist_d[::-1][:order - 1]
            coeffs = _sa_coefficients(points, lam_s, lam_t, tau)
            x = base + sum(c * v for c, v in zip(coeffs, values)) + noise_term
            if pece:
                denoised = denoise(x, sigmas[i])
        else:
            x = x_pred
        hist_d = (hist_d + [denoised])[-max(predictor_order, corrector_order):]
        hist_lam = (hist_lam + [lams[i]])[-max(predictor_order, corrector_order):]
        if s[i + 1] == 0:
            x = denoised
            x_pred = x
        else:
            lam_s, lam_t = lams[i], lams[i + 1]
            h = lam_t - lam_s
            tau = 1.0 if tau_range[0] <= s[i + 1] <= tau_range[1] else 0.0
            base = (s[i + 1] / s[i]) * math.exp(-(tau ** 2) * h) * x
            noise_term = 0.0
            if tau > 0 and s_noise > 0:
                noise_term = (noise(sigmas[i], sigmas[i + 1]) * s[i + 1]
                              * math.sqrt(-math.expm1(-2 * tau ** 2 * h)) * s_noise)
            order = min(predictor_order, len(hist_d))
            coeffs = _sa_coefficients(hist_lam[::-1][:order], lam_s, lam_t, tau)
            x_pred = base + sum(c * v for c, v in zip(coeffs, hist_d[::-1][:order])) + noise_term
            pending = (base, noise_term, lam_s, lam_t, tau)
        _report(on_step, i, x_pred, denoised)
    return x_pred


@torch.no_grad()
def sample_sa_solver(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseSampler,
                     on_step: StepCallback | None = None) -> Tensor:
    """SA-Solver, stochastic Adams predictor-corrector, one evaluation per step (Xue et al. 2023, arXiv 2309.05019)."""
    return _sa_solver(denoise, x, sigmas, noise, on_step, pece=False)


@torch.no_grad()
def sample_sa_solver_pece(denoise: Denoiser, x: Tensor, sigmas: Tensor, *, noise: NoiseSampler,
                          on_step: StepCallback | None = None) -> Tensor:
    """SA-Solver in predict-evaluate-correct-evaluate mode (Xue et al. 2023, arXiv 2309.05019)."""
    return _sa_solver(denoise, x, sigmas, noise, on_step, pece=True)


# --- UniPC ----------------------------------------------------------------------------------------

@torch.no_grad()
def _unipc(denoise: Denoiser, x: Tensor, sigmas: Tensor, on_step: StepCallback | None,
           variant: Literal["bh1", "bh2"]) -> Tensor:
    if len(sigmas) <= 1:
        return x
    sigmas = sigmas.clone()  # the spec's in-place 0 → 0.001 is applied to a private copy
    if sigmas[-1] == 0:
        sigmas[-1] = 1e-3
    steps = len(sigmas) - 1
    order = max(1, min(3, len(sigmas) - 2))

    def log_alpha(s: Tensor) -> Tensor:
        return 0.5 * torch.log(1 / (s ** 2 + 1))

    def alpha(s: Tensor) -> Tensor:
        return log_alpha(s).exp()

    def sig_vp(s: Tensor) -> Tensor:
        return (1 - (2 * log_alpha(s)).exp()).sqrt()

    def lam(s: Tensor) -> Tensor:
        la = log_alpha(s)
        return la - 0.5 * torch.log(1 - (2 * la).exp())

    calls = [0]

    def model(v: Tensor, s: Tensor) -> Tensor:
        x_ve = v * (s ** 2 + 1) ** 0.5
        denoised = denoise(x_ve, s)
        eps = (x_ve - denoised) / s
        _report(on_step, calls[0], x_ve, denoised)
        calls[0] += 1
        return (v - sig_vp(s) * eps) / alpha(s)

    def update(v: Tensor, ms: list[Tensor], ts: list[Tensor], t: Tensor, k: int,
               corrector: bool) -> tuple[Tensor, Tensor | None]:
        lam0 = lam(ts[-1])
        h = lam(t) - lam0
        hh = -h
        rks, d1s = [], []
        for i in range(1, k):
            rk = (lam(ts[-(i + 1)]) - lam0) / h
            rks.append(rk)
            d1s.append((ms[-(i + 1)] - ms[-1]) / rk)
        rks.append(torch.ones_like(h))
        rks_t = torch.stack(rks)
        phi_1 = hh.expm1()
        b_h = hh if variant == "bh1" else hh.expm1()
        h_phi_k = phi_1 / hh - 1
        factorial = 1
        rows, b = [], []
        for i in range(1, k + 1):
            rows.append(rks_t ** (i - 1))
            b.append(h_phi_k * factorial / b_h)
            factorial *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial
        R, b_t = torch.stack(rows), torch.stack(b)
        v_hat = sig_vp(t) / sig_vp(ts[-1]) * v - alpha(t) * phi_1 * ms[-1]
        v_t = v_hat
        if d1s:
            rhos_p = (torch.tensor([0.5], dtype=R.dtype) if k == 2
                      else torch.linalg.solve(R[:-1, :-1], b_t[:-1]))
            v_t = v_hat - alpha(t) * b_h * sum(r * d for r, d in zip(rhos_p, d1s))
        if not corrector:
            return v_t, None
        m_t = model(v_t, t)
        rhos_c = torch.tensor([0.5], dtype=R.dtype) if k == 1 else torch.linalg.solve(R, b_t)
        corr = sum((r * d for r, d in zip(rhos_c[:-1], d1s)), torch.zeros_like(v))
        v_t = v_hat - alpha(t) * b_h * (corr + rhos_c[-1] * (m_t - ms[-1]))
        return v_t, m_t

    v = x / (1 + sigmas[0] ** 2) ** 0.5
    ms, ts = [model(v, sigmas[0])], [sigmas[0]]
    for step in range(1, order):
        v, m = update(v, ms, ts, sigmas[step], step, corrector=True)
        ms.append(m)
        ts.append(sigmas[step])
    for step in range(order, steps + 1):
        k = min(order, steps + 1 - step)
        v, m = update(v, ms, ts, sigmas[step], k, corrector=step != steps)
        ts = ts[1:] + [sigmas[step]]
        if m is not None:
            ms = ms[1:] + [m]
    return v / alpha(sigmas[-1])


@torch.no_grad()
def sample_uni_pc(denoise: Denoiser, x: Tensor, sigmas: Tensor, *,
                  noise: NoiseSampler | None = None, on_step: StepCallback | None = None) -> Tensor:
    """UniPC multistep predictor-corrector, B(h) = h (Zhao et al. 2023, arXiv 2302.04867)."""
    return _unipc(denoise, x, sigmas, on_step, "bh1")


@torch.no_grad()
def sample_uni_pc_bh2(denoise: Denoiser, x: Tensor, sigmas: Tensor, *,
                      noise: NoiseSampler | None = None,
                      on_step: StepCallback | None = None) -> Tensor:
    """UniPC multistep predictor-corrector, B(h) = e^h − 1 (Zhao et al. 2023, arXiv 2302.04867)."""
    return _unipc(denoise, x, sigmas, on_step, "bh2")


# --- registry -------------------------------------------------------------------------------------

NoiseKind = Literal["none", "default", "brownian", "brownian_device"]


@dataclass(frozen=True)
class Sampler:
    """A sampler function plus what the caller must set up for it."""

    fn: Callable[..., Tensor]
    noise: NoiseKind = "none"
    discard_penultimate: bool = False   # schedule for steps+1, drop the second-to-last sigma
    needs_uncond: bool = False          # CFG++: always evaluate the negative, pass D_uncond


SAMPLERS: dict[str, Sampler] = {
    "euler": Sampler(sample_euler),
    "euler_cfg_pp": Sampler(sample_euler_cfg_pp, needs_uncond=True),
    "euler_ancestral": Sampler(sample_euler_ancestral, "default"),
    "euler_ancestral_cfg_pp": Sampler(sample_euler_ancestral_cfg_pp, "default", needs_uncond=True),
    "heun": Sampler(sample_heun),
    "heunpp2": Sampler(sample_heunpp2),
    "exp_heun_2_x0": Sampler(sample_exp_heun_2_x0),
    "exp_heun_2_x0_sde": Sampler(sample_exp_heun_2_x0_sde, "default"),
    "dpm_2": Sampler(sample_dpm_2, discard_penultimate=True),
    "dpm_2_ancestral": Sampler(sample_dpm_2_ancestral, "default", discard_penultimate=True),
    "lms": Sampler(sample_lms),
    "dpm_fast": Sampler(sample_dpm_fast),
    "dpm_adaptive": Sampler(sample_dpm_adaptive),
    "dpmpp_2s_ancestral": Sampler(sample_dpmpp_2s_ancestral, "default"),
    "dpmpp_2s_ancestral_cfg_pp": Sampler(sample_dpmpp_2s_ancestral_cfg_pp, "default", needs_uncond=True),
    "dpmpp_sde": Sampler(sample_dpmpp_sde, "brownian"),
    "dpmpp_sde_gpu": Sampler(sample_dpmpp_sde, "brownian_device"),
    "dpmpp_2m": Sampler(sample_dpmpp_2m),
    "dpmpp_2m_cfg_pp": Sampler(sample_dpmpp_2m_cfg_pp, needs_uncond=True),
    "dpmpp_2m_sde": Sampler(sample_dpmpp_2m_sde, "brownian"),
    "dpmpp_2m_sde_gpu": Sampler(sample_dpmpp_2m_sde, "brownian_device"),
    "dpmpp_2m_sde_heun": Sampler(sample_dpmpp_2m_sde_heun, "brownian"),
    "dpmpp_2m_sde_heun_gpu": Sampler(sample_dpmpp_2m_sde_heun, "brownian_device"),
    "dpmpp_3m_sde": Sampler(sample_dpmpp_3m_sde, "brownian"),
    "dpmpp_3m_sde_gpu": Sampler(sample_dpmpp_3m_sde, "brownian_device"),
    "ddpm": Sampler(sample_ddpm, "default"),
    "lcm": Sampler(sample_lcm, "default"),
    "ipndm": Sampler(sample_ipndm),
    "ipndm_v": Sampler(sample_ipndm_v),
    "deis": Sampler(sample_deis),
    "res_multistep": Sampler(sample_res_multistep),
    "res_multistep_cfg_pp": Sampler(sample_res_multistep_cfg_pp, needs_uncond=True),
    "res_multistep_ancestral": Sampler(sample_res_multistep_ancestral, "default"),
    "res_multistep_ancestral_cfg_pp": Sampler(sample_res_multistep_ancestral_cfg_pp, "default", needs_uncond=True),
    "gradient_estimation": Sampler(sample_gradient_estimation),
    "gradient_estimation_cfg_pp": Sampler(sample_gradient_estimation_cfg_pp, needs_uncond=True),
    "er_sde": Sampler(sample_er_sde, "default"),
    "seeds_2": Sampler(sample_seeds_2, "default"),
    "seeds_3": Sampler(sample_seeds_3, "default"),
    "sa_solver": Sampler(sample_sa_solver, "default"),
    "sa_solver_pece": Sampler(sample_sa_solver_pece, "default"),
    "ddim": Sampler(sample_euler),
    "uni_pc": Sampler(sample_uni_pc, discard_penultimate=True),
    "uni_pc_bh2": Sampler(sample_uni_pc_bh2, discard_penultimate=True),
}

# ComfyUI's combo list (sampling.md §5.1), in order; every name is implemented above.
SAMPLER_NAMES: list[str] = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2",
    "exp_heun_2_x0", "exp_heun_2_x0_sde", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast",
    "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde",
    "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm",
    "lcm", "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp",
    "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp", "gradient_estimation",
    "gradient_estimation_cfg_pp", "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece",
    "ddim", "uni_pc", "uni_pc_bh2",
]


class UnsupportedSampler(ValueError):
    """A sampler name that is not one of ComfyUI's (e.g. from a hand-written API prompt)."""


def get_sampler(name: str) -> Sampler:
    """The sampler registered under `name`; an unknown name raises."""
    if name in SAMPLERS:
        return SAMPLERS[name]
    raise UnsupportedSampler(f"unknown sampler {name!r}")
