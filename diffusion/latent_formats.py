"""Latent formats: the scale factor the sampler applies and the latent→RGB preview factors (sampling.md §8)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class LatentFormat:
    """How a family's VAE latents are scaled for the sampler and previewed cheaply."""

    name: str
    scale_factor: float
    rgb_factors: tuple[tuple[float, float, float], ...]  # rows = latent channels, cols = R, G, B
    rgb_bias: tuple[float, float, float] | None = None

    def process_in(self, latent: Tensor) -> Tensor:
        """Raw VAE latent → the sampler's space."""
        return latent * self.scale_factor

    def process_out(self, latent: Tensor) -> Tensor:
        """Sampler space → raw VAE latent."""
        return latent / self.scale_factor

    def latent_to_rgb(self, latent: Tensor) -> Tensor:
        """Preview colours `[h, w, 3]` in -1..1 for one scaled latent `[C, h, w]` (Latent2RGB)."""
        factors = torch.tensor(self.rgb_factors, dtype=torch.float32, device=latent.device)  # [C, 3]
        rgb = torch.einsum("chw,cr->hwr", latent.float(), factors)
        if self.rgb_bias is not None:
            rgb = rgb + torch.tensor(self.rgb_bias, dtype=torch.float32, device=latent.device)
        return rgb

    def preview_bytes(self, latent: Tensor) -> Tensor:
        """Preview as uint8 `[h, w, 3]`: `uint8(clamp((rgb+1)/2, 0, 1)·255)` truncated toward zero."""
        return (((self.latent_to_rgb(latent) + 1) / 2).clamp(0, 1) * 255).to(torch.uint8)


SD15 = LatentFormat(
    name="sd15", scale_factor=0.18215,
    rgb_factors=((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350),
                 (-0.2829, 0.1762, 0.2721), (-0.2120, -0.2616, -0.7177)),
)

SDXL = LatentFormat(
    name="sdxl", scale_factor=0.13025,
    rgb_factors=((0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068),
                 (0.1076, 0.1111, -0.0362), (-0.3165, -0.2492, -0.2188)),
    rgb_bias=(0.1084, -0.0175, -0.0011),
)

def for_family(family: str) -> LatentFormat:
    """The latent format of a model family (`sd1`, `sd2` → SD15; `sdxl*` → SDXL)."""
    return SDXL if family.startswith("sdxl") else SD15
