"""Runs the demo checkpoint through Kiln's own library: checkpoint loader, CLIP, KSampler, VAE."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from diffusion.loading import load_checkpoint
from diffusion.sampling.ksampler import ksampler
from tools.demo_data import BACKGROUNDS, COLOURS, SHAPES, Scene, caption, make_dataset, shape_mask
from tools.shape_eval import iou, read_image

ROOT = Path(__file__).resolve().parents[1]
DEMO_CHECKPOINT = ROOT / "models" / "checkpoints" / "kiln-demo-shapes.safetensors"


def load_demo(path: str | Path = DEMO_CHECKPOINT):
    """(MODEL, CLIP, VAE) handles of the demo checkpoint, through the ordinary checkpoint loader."""
    return load_checkpoint(str(path))


def conditioning(clip, prompts: list[str]) -> list:
    """One CONDITIONING whose batch holds one prompt per latent (cond [B, 77, D])."""
    return [[torch.cat([clip.encode(p)[0] for p in prompts]), {"pooled_output": None}]]


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """IMAGE [B, H, W, 3] 0..1 → uint8 numpy."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def sample(model, clip, vae, prompts: list[str], *, seed: int = 0, steps: int = 12, cfg: float = 5.0,
           negative: str | list[str] = "", sampler: str = "euler", scheduler: str = "normal",
           init: np.ndarray | None = None, denoise: float = 1.0, mask: np.ndarray | None = None,
           size: int = 64) -> np.ndarray:
    """Images (uint8 [B, size, size, 3]) for a batch of prompts, txt2img or from `init` (img2img/inpaint).

    `mask` (float [B, H, W], 1 = repaint) becomes the latent's noise_mask, as SetLatentNoiseMask does.
    """
    negatives = [negative] * len(prompts) if isinstance(negative, str) else negative
    if init is None:
        latent = {"samples": torch.zeros(len(prompts), 4, size // 8, size // 8)}
    else:
        latent = {"samples": vae.encode(torch.from_numpy(init).float() / 255)}
    if mask is not None:
        latent["noise_mask"] = torch.from_numpy(mask).float()[:, None]
    out = ksampler(model, seed=seed, steps=steps, cfg=cfg, sampler_name=sampler, scheduler=scheduler,
                   positive=conditioning(clip, prompts), negative=conditioning(clip, negatives),
                   latent=latent, denoise=denoise)
    return to_uint8(vae.decode(out["samples"]))


def eval_prompts(n: int = 100) -> list[tuple[str, str, str, str]]:
    """n (prompt, colour, shape, background) cases cycling every colour x shape on contrasting backgrounds."""
    cases = []
    backgrounds = list(BACKGROUNDS)
    for i in range(n):
        colour = list(COLOURS)[i % len(COLOURS)]
        shape = SHAPES[(i // len(COLOURS)) % len(SHAPES)]
        options = [b for b in backgrounds if b != colour]
        bg = options[(i // (len(COLOURS) * len(SHAPES)) + i) % len(options)]
        cases.append((f"a {colour} {shape} on a {bg} background", colour, shape, bg))
    return cases


def prompt_following(model, clip, vae, *, cfg: float, n: int = 100, steps: int = 12, seed: int = 0) -> dict:
    """Colour, shape and background accuracy of the evaluator over n generated prompts."""
    cases = eval_prompts(n)
    images = sample(model, clip, vae, [c[0] for c in cases], seed=seed, steps=steps, cfg=cfg)
    readings = [read_image(im) for im in images]
    return {
        "colour": float(np.mean([r.colour == c[1] for r, c in zip(readings, cases)])),
        "shape": float(np.mean([r.shape == c[2] for r, c in zip(readings, cases)])),
        "background": float(np.mean([r.background == c[3] for r, c in zip(readings, cases)])),
    }


def negative_colour(model, clip, vae, *, colour: str = "red", n: int = 48, seed: int = 1) -> dict:
    """How often `colour` is drawn for a colourless prompt, with and without it as the negative prompt."""
    prompts = [f"a {SHAPES[i % len(SHAPES)]} on a white background" for i in range(n)]
    counts = {}
    for label, negative in (("without_negative", ""), ("with_negative", colour)):
        images = sample(model, clip, vae, prompts, seed=seed, negative=negative)
        counts[label] = sum(read_image(im).colour == colour for im in images)
    return counts


def _sources(n: int, seed: int) -> tuple[np.ndarray, list[Scene]]:
    """Rendered dataset pictures (uint8) to start img2img and inpainting from."""
    return make_dataset(n, seed=seed)


def img2img_layout(model, clip, vae, *, denoise: float = 0.3, n: int = 16, seed: int = 2) -> dict:
    """Mean IoU of the shape region before and after img2img, and how often the background survives."""
    images, scenes = _sources(n, seed + 1000)
    out = sample(model, clip, vae, [caption(s) for s in scenes], seed=seed, init=images, denoise=denoise)
    readings = [read_image(im) for im in out]
    return {"iou": float(np.mean([iou(r.mask, shape_mask(s)) for r, s in zip(readings, scenes)])),
            "background_kept": float(np.mean([r.background == s.background for r, s in zip(readings, scenes)]))}


def inpaint_locality(model, clip, vae, *, n: int = 16, seed: int = 3) -> dict:
    """Mean absolute change inside a centre-square noise mask and outside it, in latents and in pixels (0..255).

    Pixel changes are measured against the VAE round trip of the source, all a latent mask can keep;
    the tiny VAE's global mid-block attention still spreads some change across the whole picture.
    """
    images, scenes = _sources(n, seed + 2000)
    source = vae.encode(torch.from_numpy(images).float() / 255)
    mask = torch.zeros(n, 1, 64, 64)
    mask[:, :, 16:48, 16:48] = 1
    prompts = [f"a {s.colour} star on a {s.background} background, center" for s in scenes]
    out = ksampler(model, seed=seed, steps=12, cfg=5.0, sampler_name="euler", scheduler="normal",
                   positive=conditioning(clip, prompts), negative=conditioning(clip, [""] * n),
                   latent={"samples": source, "noise_mask": mask}, denoise=1.0)["samples"]
    change = (out - source).abs().mean(dim=1)  # [n, 8, 8]
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[2:6, 2:6] = True
    pixels = np.abs(to_uint8(vae.decode(out)).astype(np.float32) - to_uint8(vae.decode(source))).mean(axis=3)
    outside_px = np.ones((64, 64), bool)
    outside_px[12:52, 12:52] = False
    return {"latent_inside": float(change[:, inside].mean()), "latent_outside": float(change[:, ~inside].mean()),
            "pixel_inside": float(pixels[:, 16:48, 16:48].mean()), "pixel_outside": float(pixels[:, outside_px].mean())}
