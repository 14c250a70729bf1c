"""Conditioning preparation, batched model calls and classifier-free guidance (sampling.md §1.6, §6, §7).

A CONDITIONING list of `[context, options]` entries becomes `PreparedCond`s once per run; every model
evaluation then averages the entries' predictions per list (areas, masks, strengths, timestep ranges)
and combines positive and negative with CFG. ControlNets plug in through the `control` entry (see
docs/contracts.md §3: `get_control(...)`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .parametrization import ModelSampling

# The 4-channel "blank" masked-image latent for 9-channel inpaint models used without a mask (§7.3).
BLANK_INPAINT_LATENT = (0.8223, -0.6876, 0.6364, 0.1380)


@dataclass
class PreparedCond:
    """One conditioning entry, resolved against the latent and the model before sampling."""

    context: Tensor                      # [1, N, D] cross-attention tokens
    y: Tensor | None = None              # [B, adm] SDXL ADM vector
    concat: Tensor | None = None         # [B, 5, h, w] inpaint mask + masked latent
    area: tuple[int, int, int, int] | None = None  # (h, w, y, x) in latent units
    strength: float = 1.0
    mask: Tensor | None = None           # [Bm, h, w] at latent resolution
    mask_strength: float = 1.0
    sigma_start: float = math.inf        # evaluated only while sigma_end <= sigma <= sigma_start
    sigma_end: float = 0.0
    control: Any = None
    options: dict | None = None          # the entry's original dict (for area matching copies)


# --- SDXL ADM vector (text-encoding.md §8.2) ------------------------------------------------------

def size_embedding(value: float, dim: int = 256) -> Tensor:
    """Sinusoidal embedding of a scalar, cosine half first: E(v) of text-encoding.md §8.2."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = torch.tensor([float(value)], dtype=torch.float32) * freqs
    return torch.cat([torch.cos(args), torch.sin(args)])


def sdxl_adm(options: dict, family: str, latent_hw: tuple[int, int], prompt_type: str,
             batch: int) -> Tensor:
    """The ADM vector `y` [batch, 2816 | 2560]: pooled text + size / crop / aesthetic embeddings."""
    pooled = options.get("pooled_output")
    if pooled is None:
        pooled = torch.zeros(1, 1280)
    pooled = pooled.to(device="cpu", dtype=torch.float32)
    height = options.get("height", latent_hw[0] * 8)
    width = options.get("width", latent_hw[1] * 8)
    crop_h, crop_w = options.get("crop_h", 0), options.get("crop_w", 0)
    if family == "sdxl_refiner":
        score = options.get("aesthetic_score", 2.5 if prompt_type == "negative" else 6.0)
        values = [height, width, crop_h, crop_w, score]
    else:
        values = [height, width, crop_h, crop_w,
                  options.get("target_height", height), options.get("target_width", width)]
    sizes = torch.cat([size_embedding(v) for v in values]).unsqueeze(0).repeat(pooled.shape[0], 1)
    y = torch.cat([pooled, sizes], dim=1)
    return resize_to_batch_size(y, batch)


# --- helpers --------------------------------------------------------------------------------------

def resize_to_batch_size(t: Tensor, batch: int) -> Tensor:
    """Repeat, pick or spread items so `t` has `batch` items (ComfyUI's rule, §7.3)."""
    n = t.shape[0]
    if n == batch:
        return t
    if batch <= 1:
        return t[:batch]
    if n < batch:
        return torch.stack([t[math.floor((i + 0.5) * n / batch)] for i in range(batch)])
    return torch.stack([t[round(i * (n - 1) / (batch - 1))] for i in range(batch)])


def _resize_crop(t: Tensor, h: int, w: int) -> Tensor:
    """Bilinear resize to cover (h, w), then centre-crop (how concat inputs are fitted)."""
    if t.shape[-2:] == (h, w):
        return t
    old_h, old_w = t.shape[-2:]
    scale = max(h / old_h, w / old_w)
    nh, nw = max(h, round(old_h * scale)), max(w, round(old_w * scale))
    t = F.interpolate(t, size=(nh, nw), mode="bilinear", align_corners=False)
    top, left = (nh - h) // 2, (nw - w) // 2
    return t[..., top:top + h, left:left + w]


def prepare_denoise_mask(noise_mask: Tensor, latent_shape: torch.Size) -> Tensor:
    """latent["noise_mask"] → [B, C, h, w] at latent size, fractional values kept (§7.1)."""
    b, c, h, w = latent_shape
    m = noise_mask.reshape(-1, 1, noise_mask.shape[-2], noise_mask.shape[-1]).to(torch.float32)
    m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
    m = m.repeat(1, c, 1, 1)
    if m.shape[0] < b:
        m = m.repeat(math.ceil(b / m.shape[0]), 1, 1, 1)
    return m[:b]


def _inpaint_concat(options: dict, latent_format: Any, latent: Tensor,
                    denoise_mask: Tensor | None) -> Tensor:
    """The 5 extra input channels of a 9-channel inpaint UNet: mask + masked-image latent (§7.3)."""
    b, _, h, w = latent.shape
    mask = options.get("concat_mask")
    if mask is None and denoise_mask is not None:
        mask = denoise_mask[:, :1]
    if mask is None:
        blank = torch.tensor(BLANK_INPAINT_LATENT, dtype=torch.float32).reshape(1, 4, 1, 1)
        return torch.cat([torch.ones(b, 1, h, w), blank.expand(b, 4, h, w)], dim=1).to(latent.device)
    mask = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).to(latent.device, torch.float32)
    mask = resize_to_batch_size(_resize_crop(mask, h, w).round(), b)
    image = options.get("concat_latent_image")
    image = (latent if image is None
             else latent_format.process_in(image.to(latent.device, torch.float32)))
    image = resize_to_batch_size(_resize_crop(image, h, w), b)
    return torch.cat([mask, image], dim=1)


def _area_in_latent(area: tuple, h: int, w: int) -> tuple[int, int, int, int]:
    if area[0] == "percentage":
        ph, pw, py, px = area[1:]
        return (max(1, round(ph * h)), max(1, round(pw * w)), round(py * h), round(px * w))
    return tuple(int(v) for v in area)  # type: ignore[return-value]


def _mask_bounds(mask: Tensor) -> tuple[int, int, int, int]:
    m = mask.abs().amax(dim=0)
    if not bool((m != 0).any()):
        return (8, 8, 0, 0)
    rows = torch.nonzero(m.amax(dim=1) != 0)
    cols = torch.nonzero(m.amax(dim=0) != 0)
    y0, y1, x0, x1 = int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())
    return (max(8, y1 - y0 + 1), max(8, x1 - x0 + 1), y0, x0)


def prepare_conds(conditioning: list, *, model_sampling: ModelSampling, family: str,
                  latent: Tensor, latent_format: Any, concat_channels: bool,
                  denoise_mask: Tensor | None, prompt_type: str) -> list[PreparedCond]:
    """Resolve areas, masks, timestep ranges and per-entry model inputs of one list (§6.2 steps 1-5)."""
    b, _, h, w = latent.shape
    schedule = model_sampling.schedule
    out: list[PreparedCond] = []
    for context, options in conditioning:
        area = options.get("area")
        area = _area_in_latent(area, h, w) if area is not None else None
        mask = options.get("mask")
        if mask is not None:
            mask = mask.to(latent.device, torch.float32)
            if mask.ndim == 2:
                mask = mask.unsqueeze(0)
            if mask.shape[-2:] != (h, w):
                mask = F.interpolate(mask.unsqueeze(1), size=(h, w), mode="bilinear",
                                     align_corners=False).squeeze(1)
            if options.get("set_area_to_bounds", False):
                area = _mask_bounds(mask)
        start, end = options.get("start_percent"), options.get("end_percent")
        cond = PreparedCond(
            context=context.to(latent.device, torch.float32),
            y=(sdxl_adm(options, family, (h, w), prompt_type, b).to(latent.device)
               if family.startswith("sdxl") else None),
            concat=(_inpaint_concat(options, latent_format, latent, denoise_mask)
                    if concat_channels else None),
            area=area,
            strength=float(options.get("strength", 1.0)),
            mask=mask,
            mask_strength=float(options.get("mask_strength", 1.0)),
            sigma_start=schedule.percent_to_sigma(start) if start is not None else math.inf,
            sigma_end=schedule.percent_to_sigma(end) if end is not None else 0.0,
            control=options.get("control"),
            options=options,
        )
        out.append(cond)
    return out


def _contains(outer: tuple, inner: tuple) -> bool:
    oh, ow, oy, ox = outer
    ih, iw, iy, ix = inner
    return oy <= iy and ox <= ix and oy + oh >= iy + ih and ox + ow >= ix + iw


def match_areas(src: list[PreparedCond], dst: list[PreparedCond]) -> None:
    """Give `dst` a copy of each area entry of `src` using the smallest containing entry's inputs (§6.2.6, quirk)."""
    for c in list(src):
        if c.area is None:
            continue
        best: PreparedCond | None = None
        best_size = math.inf
        for other in dst:
            if other.area is None:
                if best is None:
                    best = other
                continue
            if _contains(other.area, c.area) and other.area[0] * other.area[1] < best_size:
                best, best_size = other, other.area[0] * other.area[1]
        if best is None or best.area == c.area:
            continue
        dst.append(replace(c, context=best.context, y=best.y, concat=best.concat))


def apply_control_to_uncond(positive: list[PreparedCond], negative: list[PreparedCond]) -> None:
    """Legacy ControlNetApply: negative area-less entries borrow the positive's ControlNets (§6.2.8)."""
    if any(c.control is not None for c in negative):
        return
    controls = [c.control for c in positive if c.area is None and c.control is not None
                and (c.options or {}).get("control_apply_to_uncond", False)]
    if not controls:
        return
    targets = [i for i, c in enumerate(negative) if c.area is None]
    for k, i in enumerate(targets):
        negative[i] = replace(negative[i], control=controls[k % len(controls)])


# --- model calls ----------------------------------------------------------------------------------

class ModelCall:
    """One UNet evaluation → denoised prediction, with the input/output scaling of §1.6."""

    def __init__(self, unet: Any, model_sampling: ModelSampling, dtype: torch.dtype = torch.float32):
        self.unet, self.ms, self.dtype = unet, model_sampling, dtype

    def __call__(self, x: Tensor, sigma: Tensor, context: Tensor, y: Tensor | None,
                 concat: Tensor | None, control: Any) -> Tensor:
        pred = self.ms.prediction
        xc = pred.calculate_input(sigma, x)                                  # [B, 4, h, w]
        t = self.ms.schedule.timestep(sigma)                                 # [B] float32
        residuals = None
        if control is not None:
            residuals = control.get_control(xc, t, sigma, context, y)
        if concat is not None:
            xc = torch.cat([xc, concat.to(xc)], dim=1)                       # [B, 9, h, w]
        out = self.unet(xc.to(self.dtype), t, context.to(self.dtype),
                        y=None if y is None else y.to(self.dtype), control=residuals)
        return pred.calculate_denoised(sigma, out.to(torch.float32), x)


def _can_batch(a: dict, b: dict) -> bool:
    if a["x"].shape != b["x"].shape or a["cond"].control is not b["cond"].control:
        return False
    ca, cb = a["cond"], b["cond"]
    if (ca.y is None) != (cb.y is None) or (ca.concat is None) != (cb.concat is None):
        return False
    na, nb = ca.context.shape[1], cb.context.shape[1]
    if ca.context.shape[2:] != cb.context.shape[2:]:
        return False
    return na == nb or math.lcm(na, nb) // min(na, nb) <= 4


def _crop(t: Tensor, area: tuple[int, int, int, int] | None) -> Tensor:
    if area is None:
        return t
    h, w, y, x = area
    return t[..., y:y + h, x:x + w]


def _entry_weight(cond: PreparedCond, x: Tensor, area: tuple | None,
                  full_hw: tuple[int, int]) -> Tensor:
    """Per-pixel weight of an entry: mask·strength, or strength with feathered inner area edges (§6.3.3)."""
    b, c, h, w = x.shape
    if cond.mask is not None:
        m = _crop(cond.mask[:b], area) * cond.mask_strength
        m = resize_to_batch_size(m, b) if m.shape[0] != b else m
        return m.unsqueeze(1).repeat(1, c, 1, 1) * cond.strength
    mult = torch.ones_like(x) * cond.strength
    if area is not None:
        full_h, full_w = full_hw
        ah, aw, ay, ax = area
        rr = min(8, ah // 4)
        for t in range(rr):
            if ay != 0:
                mult[:, :, t:t + 1, :] *= (t + 1) / rr
            if ay + ah < full_h:
                mult[:, :, ah - 1 - t:ah - t, :] *= (t + 1) / rr
        rr = min(8, aw // 4)
        for t in range(rr):
            if ax != 0:
                mult[:, :, :, t:t + 1] *= (t + 1) / rr
            if ax + aw < full_w:
                mult[:, :, :, aw - 1 - t:aw - t] *= (t + 1) / rr
    return mult


def calc_cond_batch(model: ModelCall, cond_lists: list[list[PreparedCond] | None], x: Tensor,
                    sigma: Tensor) -> list[Tensor]:
    """Weighted average prediction of every list, batching compatible entries into one call (§6.3, §6.5)."""
    b, _, h, w = x.shape
    sigma_first = float(sigma.reshape(-1)[0])
    outs = [torch.zeros_like(x) for _ in cond_lists]
    counts = [torch.full_like(x, 1e-37) for _ in cond_lists]
    pending: list[dict] = []
    for li, conds in enumerate(cond_lists):
        for cond in conds or []:
            if sigma_first > cond.sigma_start or sigma_first < cond.sigma_end:
                continue
            area = None
            if cond.area is not None:
                ah, aw, ay, ax = cond.area
                area = (min(h - ay, ah), min(w - ax, aw), ay, ax)
            pending.append({"list": li, "cond": cond, "area": area, "x": _crop(x, area),
                            "mult": _entry_weight(cond, _crop(x, area), area, (h, w))})
    while pending:
        first = pending[0]
        group = [p for p in pending if _can_batch(first, p)]
        pending = [p for p in pending if not any(p is g for g in group)]
        group.reverse()  # ComfyUI collects in reverse: [negative, positive] for the usual pair
        lengths = [g["cond"].context.shape[1] for g in group]
        tokens = math.lcm(*lengths)
        contexts = [g["cond"].context.repeat(1, tokens // n, 1) for g, n in zip(group, lengths)]
        xs = torch.cat([g["x"] for g in group])
        context = torch.cat([resize_to_batch_size(c, g["x"].shape[0]) if c.shape[0] != 1
                             else c.expand(g["x"].shape[0], -1, -1)
                             for c, g in zip(contexts, group)])
        y = (torch.cat([g["cond"].y for g in group]) if group[0]["cond"].y is not None else None)
        concat = (torch.cat([_crop(g["cond"].concat, g["area"]) for g in group])
                  if group[0]["cond"].concat is not None else None)
        sig = sigma.reshape(-1)
        sig = sig.repeat(xs.shape[0] // sig.shape[0]) if sig.shape[0] > 1 else sig.expand(xs.shape[0])
        denoised = model(xs, sig, context, y, concat, group[0]["cond"].control)
        for k, g in enumerate(group):
            d = denoised[k * b:(k + 1) * b]
            area = g["area"]
            if area is None:
                outs[g["list"]] += d * g["mult"]
                counts[g["list"]] += g["mult"]
            else:
                ah, aw, ay, ax = area
                outs[g["list"]][:, :, ay:ay + ah, ax:ax + aw] += d * g["mult"]
                counts[g["list"]][:, :, ay:ay + ah, ax:ax + aw] += g["mult"]
    return [o / c for o, c in zip(outs, counts)]


class CFGDenoiser:
    """D(x, σ) = D_neg + (D_pos − D_neg)·cfg over prepared conditioning lists (§6.4)."""

    def __init__(self, model: ModelCall, positive: list[PreparedCond],
                 negative: list[PreparedCond], cfg: float, always_uncond: bool = False):
        self.model, self.positive, self.negative = model, positive, negative
        self.cfg, self.always_uncond = cfg, always_uncond

    def with_uncond(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """(guided D, unconditional D) — the pair CFG++ samplers need."""
        sigma_b = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
        sigma_b = sigma_b.expand(x.shape[0]) if sigma_b.numel() == 1 else sigma_b
        skip_negative = math.isclose(self.cfg, 1.0, rel_tol=1e-9) and not self.always_uncond
        pos, neg = calc_cond_batch(self.model, [self.positive, None if skip_negative else self.negative],
                                   x, sigma_b)
        return neg + (pos - neg) * self.cfg, neg

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        return self.with_uncond(x, sigma)[0]


class MaskedDenoiser:
    """Inpainting with a noise mask: the unmasked region is pinned to the re-noised original (§7.2)."""

    def __init__(self, inner: CFGDenoiser, mask: Tensor, latent: Tensor, noise: Tensor):
        self.inner, self.mask, self.latent, self.noise = inner, mask, latent, noise

    def _blend_in(self, x: Tensor, sigma: Tensor) -> Tensor:
        s = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1)[0]
        return x * self.mask + (self.latent + self.noise * s) * (1 - self.mask)

    def with_uncond(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        d, u = self.inner.with_uncond(self._blend_in(x, sigma), sigma)
        keep = self.latent * (1 - self.mask)
        return d * self.mask + keep, u * self.mask + keep

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        return self.with_uncond(x, sigma)[0]

