"""VAEHandle: the VAE wire object — pixel ↔ latent conversion with ComfyUI's conventions (sampling.md §8.3)."""
from __future__ import annotations

import threading
from typing import Callable

import torch
from torch import Tensor

from diffusion import memory
from diffusion.latent_formats import LatentFormat
from diffusion.models.vae import AutoencoderKL

_lock = threading.RLock()


def crop_to_multiple(pixels: Tensor, multiple: int = 8) -> Tensor:
    """Centre-crop `[B, H, W, C]` pixels so H and W are multiples of `multiple`."""
    h, w = pixels.shape[1], pixels.shape[2]
    h2, w2 = (h // multiple) * multiple, (w // multiple) * multiple
    if (h2, w2) == (h, w):
        return pixels
    top, left = (h % multiple) // 2, (w % multiple) // 2
    return pixels[:, top:top + h2, left:left + w2, :]


def _feather(h: int, w: int, overlap: int, device: torch.device) -> Tensor:
    """A `[1, 1, h, w]` blend mask ramping from ~0 to 1 over `overlap` pixels at each edge."""
    def ramp(n: int) -> Tensor:
        r = torch.ones(n, device=device)
        f = min(overlap, n // 2)
        if f > 0:
            steps = (torch.arange(f, device=device, dtype=torch.float32) + 1) / (f + 1)
            r[:f] = steps
            r[n - f:] = torch.minimum(r[n - f:], steps.flip(0))
        return r

    return (ramp(h)[:, None] * ramp(w)[None, :])[None, None]


def tiled(fn: Callable[[Tensor], Tensor], x: Tensor, tile: int, overlap: int, scale: float, out_channels: int) -> Tensor:
    """Run `fn` over overlapping `tile`×`tile` windows of `x` `[B, C, H, W]` and feather-blend the results.

    `scale` is the output/input size ratio (8 for decode, 1/8 for encode).
    """
    b, _, h, w = x.shape
    out_h, out_w = round(h * scale), round(w * scale)
    acc = torch.zeros(b, out_channels, out_h, out_w, dtype=torch.float32, device=x.device)
    weight = torch.zeros(1, 1, out_h, out_w, dtype=torch.float32, device=x.device)
    stride = max(1, tile - overlap)

    def starts(size: int) -> list[int]:
        if size <= tile:
            return [0]
        s = list(range(0, size - tile, stride)) + [size - tile]
        return sorted(set(s))

    for y0 in starts(h):
        for x0 in starts(w):
            piece = fn(x[:, :, y0:y0 + tile, x0:x0 + tile]).float().to(x.device)
            oy, ox = round(y0 * scale), round(x0 * scale)
            ph, pw = piece.shape[-2:]
            mask = _feather(ph, pw, round(overlap * scale), x.device)
            acc[:, :, oy:oy + ph, ox:ox + pw] += piece * mask
            weight[:, :, oy:oy + ph, ox:ox + pw] += mask
    return acc / weight


class VAEHandle:
    """Encode `[B, H, W, 3]` 0..1 pixels to raw latents `[B, 4, H/8, W/8]` and decode them back."""

    def __init__(self, model: AutoencoderKL, latent_format: LatentFormat, *, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, batch_size: int = 4):
        self.model = model
        self.latent_format = latent_format
        self.device = torch.device(device)
        self.dtype = dtype
        self.batch_size = batch_size
        self.downscale = model.downscale

    def _run(self, fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        """Apply `fn` in batches in the compute dtype; redo in fp32 (and stay there) if it makes NaNs."""
        with _lock, torch.no_grad():
            memory.load_to(self.model, self.device)
            outs = []
            for chunk in x.split(self.batch_size):
                chunk = chunk.to(self.device)
                with memory.weights_as(self.model, self.dtype):
                    out = fn(chunk.to(self.dtype)).float()
                if self.dtype != torch.float32 and torch.isnan(out).any():
                    self.dtype = torch.float32  # fp16/bf16 VAEs (notably SDXL's) overflow
                    with memory.weights_as(self.model, self.dtype):
                        out = fn(chunk.float()).float()
                outs.append(out)
            return torch.cat(outs)

    def encode(self, pixels: Tensor) -> Tensor:
        """Pixels `[B, H, W, 3]` 0..1 (centre-cropped to multiples of 8) → latents `[B, 4, H/8, W/8]` (float32, CPU)."""
        x = crop_to_multiple(pixels[..., :3], self.downscale).movedim(-1, 1) * 2 - 1  # [B, 3, H, W]
        return self._run(self.model.encode, x).cpu()

    def decode(self, latents: Tensor) -> Tensor:
        """Latents `[B, 4, h, w]` → pixels `[B, 8h, 8w, 3]` float32 0..1 on the CPU."""
        y = self._run(self.model.decode, latents)
        return ((y + 1) / 2).clamp(0, 1).movedim(1, -1).cpu()

    def encode_tiled(self, pixels: Tensor, tile_size: int = 512, overlap: int = 64) -> Tensor:
        """`encode` in overlapping pixel tiles of `tile_size` (multiples of 8) for large images."""
        x = crop_to_multiple(pixels[..., :3], self.downscale).movedim(-1, 1) * 2 - 1
        tile, overlap = max(self.downscale, tile_size // 8 * 8), overlap // 8 * 8
        enc = lambda t: self._run(self.model.encode, t)  # noqa: E731
        return tiled(enc, x, tile, overlap, 1 / self.downscale, self.model.embed_dim).cpu()

    def decode_tiled(self, latents: Tensor, tile_size: int = 512, overlap: int = 64) -> Tensor:
        """`decode` in overlapping tiles; `tile_size`/`overlap` are in pixels (as the node's widgets)."""
        tile, ov = max(1, tile_size // self.downscale), overlap // self.downscale
        dec = lambda t: self._run(self.model.decode, t)  # noqa: E731
        y = tiled(dec, latents, tile, ov, self.downscale, 3)
        return ((y + 1) / 2).clamp(0, 1).movedim(1, -1).cpu()

    def model_size(self) -> int:
        """Bytes of the VAE weights in their storage dtype."""
        return memory.module_bytes(self.model)
