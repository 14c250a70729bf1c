"""Seeded noise: the initial latent noise and the per-step noise of ancestral and SDE samplers.

Every draw comes from a private generator seeded as ComfyUI does on the CPU (sampling.md §4), so the
same seed reproduces the same image; the global RNG is never touched.
"""
from __future__ import annotations

import warnings
from typing import Protocol, Sequence

import torch
from torch import Tensor

MAX_SEED = 0xFFFFFFFFFFFFFFFF


class NoiseSampler(Protocol):
    """Noise for a step from sigma to sigma_next: a standard normal tensor of the latent's shape."""

    def __call__(self, sigma: Tensor, sigma_next: Tensor) -> Tensor: ...


def _generator(seed: int) -> torch.Generator:
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed {seed} is outside 0 … {MAX_SEED}")
    return torch.Generator("cpu").manual_seed(seed)


def initial_noise(latent: Tensor, seed: int, batch_index: Sequence[int] | None = None) -> Tensor:
    """The starting noise for `latent` ([B,C,h,w]) from `seed`, honouring `batch_index` (§4.1)."""
    gen = _generator(seed)
    if batch_index is None:
        return torch.randn(latent.shape, dtype=latent.dtype, layout=latent.layout,
                           generator=gen, device="cpu")
    # One [1,C,h,w] draw per index up to the largest: element j gets the draw for index i_j,
    # which differs from slicing one big draw unless C·h·w is a multiple of 16 (spec quirk).
    wanted = sorted(set(int(i) for i in batch_index))
    draws: dict[int, Tensor] = {}
    for i in range(wanted[-1] + 1):
        draw = torch.randn([1] + list(latent.shape[1:]), dtype=latent.dtype,
                           layout=latent.layout, generator=gen, device="cpu")
        if i in wanted:
            draws[i] = draw
    return torch.cat([draws[int(i)] for i in batch_index], dim=0)


class DefaultNoise:
    """Ancestral noise: fresh randn draws in call order from a generator seeded with seed+1 (§4.3)."""

    def __init__(self, x: Tensor, seed: int):
        if seed + 1 > MAX_SEED:
            raise ValueError(
                f"seed {seed} is too large for ancestral/SDE noise: it is seeded with seed+1, "
                f"which must be at most {MAX_SEED}; use a smaller seed")
        self.shape, self.dtype, self.device = x.shape, x.dtype, x.device
        self.generator = _generator(seed + 1)

    def __call__(self, sigma: Tensor, sigma_next: Tensor) -> Tensor:
        return torch.randn(self.shape, dtype=self.dtype, generator=self.generator,
                           device="cpu").to(self.device)


class BrownianTreeNoise:
    """Brownian-tree noise for SDE samplers (torchsde.BrownianTree, entropy = seed, §4.4).

    Increments over overlapping intervals are consistent, so the SDE solution converges as steps
    are refined instead of changing completely with the step count.
    """

    def __init__(self, x: Tensor, sigmas: Tensor, seed: int, on_device: bool = False):
        import torchsde

        if not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed {seed} is outside 0 … {MAX_SEED}")
        positive = sigmas[sigmas > 0]
        self.device = x.device if on_device else torch.device("cpu")
        self.t0 = positive.min().to(torch.float32).to(self.device)
        self.t1 = sigmas.max().to(torch.float32).to(self.device)
        w0 = torch.zeros(x.shape, dtype=torch.float32, device=self.device)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Should have", category=UserWarning)
            self.tree = torchsde.BrownianTree(t0=self.t0, w0=w0, t1=self.t1, entropy=seed)
        self.out_device, self.out_dtype = x.device, x.dtype

    def __call__(self, sigma: Tensor, sigma_next: Tensor) -> Tensor:
        a = torch.as_tensor(sigma, dtype=torch.float32).to(self.device)
        b = torch.as_tensor(sigma_next, dtype=torch.float32).to(self.device)
        lo, hi = torch.min(a, b), torch.max(a, b)
        sign = 1.0 if float(a) < float(b) else -1.0
        with warnings.catch_warnings():
            # float32 query times may round just past the tree's float end; harmless
            warnings.filterwarnings("ignore", message="Should have", category=UserWarning)
            w = sign * self.tree(lo, hi)
        return (w / (b - a).abs().sqrt()).to(self.out_device, self.out_dtype)
