"""Schedulers: (schedule, steps) -> descending float32 sigmas, and KSampler's step selection.

Formulas and reference values: sampling.md §2 and §3.1.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from .parametrization import DiscreteSchedule

Scheduler = Callable[[DiscreteSchedule, int], Tensor]


def _with_zero(sigmas: Tensor) -> Tensor:
    return torch.cat([sigmas.to(torch.float32), sigmas.new_zeros([1], dtype=torch.float32)])


def simple(schedule: DiscreteSchedule, n: int) -> Tensor:
    """Every (1000/n)-th table sigma from the top."""
    ss = len(schedule.sigmas) / n
    sigs = [float(schedule.sigmas[-(1 + int(k * ss))]) for k in range(n)] + [0.0]
    return torch.tensor(sigs, dtype=torch.float32)


def sgm_uniform(schedule: DiscreteSchedule, n: int) -> Tensor:
    """Uniform timesteps over n+1 points with the last dropped (SGM / Stability's uniform)."""
    start = float(schedule.timestep(schedule.sigma_max))
    end = float(schedule.timestep(schedule.sigma_min))
    ts = torch.linspace(start, end, n + 1)[:-1]
    return _with_zero(torch.stack([schedule.sigma(t) for t in ts]))


def normal(schedule: DiscreteSchedule, n: int) -> Tensor:
    """Uniform timesteps from the top to the bottom of the table, both included."""
    start = float(schedule.timestep(schedule.sigma_max))
    end = float(schedule.timestep(schedule.sigma_min))
    zero_at_end = math.isclose(float(schedule.sigma(end)), 0.0, abs_tol=1e-5)
    ts = torch.linspace(start, end, n + 1 if zero_at_end else n)
    sigs = torch.stack([schedule.sigma(t) for t in ts])
    return sigs if zero_at_end else _with_zero(sigs)


def karras(schedule: DiscreteSchedule, n: int, rho: float = 7.0) -> Tensor:
    """Karras et al. 2022 (EDM) eq. 5: uniform in sigma^(1/rho)."""
    sigma_min, sigma_max = float(schedule.sigma_min), float(schedule.sigma_max)
    ramp = torch.linspace(0, 1, n)
    min_inv, max_inv = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _with_zero((max_inv + ramp * (min_inv - max_inv)) ** rho)


def exponential(schedule: DiscreteSchedule, n: int) -> Tensor:
    """Uniform in log sigma."""
    sigma_min, sigma_max = float(schedule.sigma_min), float(schedule.sigma_max)
    return _with_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp())


def ddim_uniform(schedule: DiscreteSchedule, n: int) -> Tensor:
    """Classic DDIM timestep spacing (integer stride 1000//n from index 1; can give >n steps)."""
    sigs: list[float] = []
    if math.isclose(float(schedule.sigmas[1]), 0.0, abs_tol=1e-5):
        n += 1
    else:
        sigs = [0.0]
    ss = max(len(schedule.sigmas) // n, 1)
    x = 1
    while x < len(schedule.sigmas):
        sigs.append(float(schedule.sigmas[x]))
        x += ss
    return torch.tensor(sigs[::-1], dtype=torch.float32)


def beta(schedule: DiscreteSchedule, n: int, alpha: float = 0.6, beta_: float = 0.6) -> Tensor:
    """Beta-distributed timesteps (Lee et al. 2024, arXiv 2407.12173), duplicates dropped."""
    import numpy as np
    from scipy import stats

    total = len(schedule.sigmas) - 1
    u = 1 - np.linspace(0, 1, n, endpoint=False)
    ts = np.rint(stats.beta.ppf(u, alpha, beta_) * total)
    sigs: list[float] = []
    last_t = -1
    for t in ts:
        if t != last_t:
            sigs.append(float(schedule.sigmas[int(t)]))
        last_t = t
    sigs.append(0.0)
    return torch.tensor(sigs, dtype=torch.float32)


def linear_quadratic(schedule: DiscreteSchedule, n: int, threshold: float = 0.025) -> Tensor:
    """Mochi's linear-then-quadratic schedule: linear up to `threshold`, quadratic after."""
    if n == 1:
        s = [1.0, 0.0]
    else:
        linear_steps = n // 2
        quadratic_steps = n - linear_steps
        linear = [i * threshold / linear_steps for i in range(linear_steps)]
        diff = linear_steps - threshold * n
        q = diff / (linear_steps * quadratic_steps ** 2)
        lin = threshold / linear_steps - 2 * diff / quadratic_steps ** 2
        const = q * linear_steps ** 2
        quadratic = [q * i ** 2 + lin * i + const for i in range(linear_steps, n)]
        s = [1.0 - v for v in linear + quadratic + [1.0]]
    return torch.tensor(s, dtype=torch.float32) * schedule.sigma_max


def kl_optimal(schedule: DiscreteSchedule, n: int) -> Tensor:
    """KL-optimal schedule (Align Your Steps, Sabour et al. 2024): uniform in atan(sigma)."""
    sigma_min, sigma_max = float(schedule.sigma_min), float(schedule.sigma_max)
    a = torch.arange(n, dtype=torch.float32) / max(n - 1, 1)
    sigs = torch.tan(a * math.atan(sigma_min) + (1 - a) * math.atan(sigma_max))
    return _with_zero(sigs)


# ComfyUI's combo order; the first entry is the fallback for an unknown name (§2).
SCHEDULERS: dict[str, Scheduler] = {
    "simple": simple,
    "sgm_uniform": sgm_uniform,
    "karras": karras,
    "exponential": exponential,
    "ddim_uniform": ddim_uniform,
    "beta": beta,
    "normal": normal,
    "linear_quadratic": linear_quadratic,
    "kl_optimal": kl_optimal,
}
SCHEDULER_NAMES: list[str] = list(SCHEDULERS)


def calculate_sigmas(schedule: DiscreteSchedule, scheduler: str, steps: int) -> Tensor:
    """Sigmas of a named scheduler; an unknown name raises (the nodes validate names first)."""
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; expected one of {SCHEDULER_NAMES}")
    return SCHEDULERS[scheduler](schedule, steps).to(torch.float32)


def ksampler_sigmas(schedule: DiscreteSchedule, scheduler: str, steps: int, *,
                    denoise: float | None = 1.0, discard_penultimate: bool = False) -> Tensor:
    """The schedule KSampler/BasicScheduler run for `steps` and `denoise` (§3.1 steps 2-3)."""
    def full(n: int) -> Tensor:
        if discard_penultimate:
            sig = calculate_sigmas(schedule, scheduler, n + 1)
            return torch.cat([sig[:-2], sig[-1:]])
        return calculate_sigmas(schedule, scheduler, n)

    if denoise is None or denoise > 0.9999:
        return full(steps)
    if denoise <= 0.0:
        return torch.zeros([0], dtype=torch.float32)
    total = int(steps / denoise)
    return full(total)[-(steps + 1):]


def cut_sigmas(sigmas: Tensor, *, start_step: int | None = None, last_step: int | None = None,
               force_full_denoise: bool = False) -> Tensor:
    """KSamplerAdvanced's start/end steps (§3.1 steps 4-5); empty means "do not sample"."""
    if last_step is not None and last_step < len(sigmas) - 1:
        sigmas = sigmas[: last_step + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0
    if start_step is not None:
        if start_step < len(sigmas) - 1:
            sigmas = sigmas[start_step:]
        else:
            return sigmas[:0]
    return sigmas


def sd_turbo_sigmas(schedule: DiscreteSchedule, steps: int, denoise: float) -> Tensor:
    """SD-Turbo: timesteps 999, 899, ... starting at 10 - int(10·denoise), plus a final 0."""
    start = 10 - int(10 * denoise)
    timesteps = torch.flip(torch.arange(1, 11) * 100 - 1, (0,))[start:start + steps]
    sigs = schedule.sigma(timesteps.to(torch.float32))
    return _with_zero(sigs)
