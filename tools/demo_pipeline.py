"""Runs the demo checkpoint through Kiln's own library: checkpoint loader, CLIP, KSampler, VAE."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from diffusion.controlnet import apply_control
from diffusion.loading import load_checkpoint, load_controlnet, read_state_dict
from diffusion.patches import apply_patch_file
from diffusion.sampling.ksampler import ksampler
from tools.demo_data import (BACKGROUNDS, COLOURS, SHAPES, Scene, caption, caption_of, describe, edge_map,
                             make_dataset, shape_mask)
from tools.shape_eval import iou, outline_score, read_image

ROOT = Path(__file__).resolve().parents[1]
DEMO_CHECKPOINT = ROOT / "models" / "checkpoints" / "kiln-demo-shapes.safetensors"
DEMO_LORA = ROOT / "models" / "loras" / "kiln-demo-outlined.safetensors"
DEMO_CONTROLNET = ROOT / "models" / "controlnet" / "kiln-demo-edges.safetensors"
DEMO_HINT = ROOT / "input" / "kiln-demo-edges.png"  # the edge map the shipped ControlNet workflow loads


def load_demo(path: str | Path = DEMO_CHECKPOINT):
    """(MODEL, CLIP, VAE) handles of the demo checkpoint, through the ordinary checkpoint loader."""
    return load_checkpoint(str(path))


def conditioning(clip, prompts: list[str]) -> list:
    """One CONDITIONING whose batch holds one prompt per latent (cond [B, 77, D])."""
    return [[torch.cat([clip.encode(p)[0] for p in prompts]), {"pooled_output": None}]]


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """IMAGE [B, H, W, 3] 0..1 → uint8 numpy."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def denoised(model, positive: list, negative: list, latent: dict, *, seed: int, steps: int, cfg: float = 5.0,
             sampler: str = "euler", scheduler: str = "normal", denoise: float = 1.0) -> torch.Tensor:
    """KSampler's output latents for a LATENT dict and (positive, negative) CONDITIONING."""
    return ksampler(model, seed=seed, steps=steps, cfg=cfg, sampler_name=sampler, scheduler=scheduler,
                    positive=positive, negative=negative, latent=latent, denoise=denoise)["samples"]


def empty_latent(n: int, size: int = 64) -> dict:
    """What EmptyLatentImage gives for n pictures of size x size."""
    return {"samples": torch.zeros(n, 4, size // 8, size // 8)}


def sample(model, clip, vae, prompts: list[str], *, seed: int = 0, steps: int = 12, cfg: float = 5.0,
           negative: str | list[str] = "", sampler: str = "euler", scheduler: str = "normal",
           init: np.ndarray | None = None, denoise: float = 1.0, mask: np.ndarray | None = None,
           size: int = 64) -> np.ndarray:
    """Images (uint8 [B, size, size, 3]) for a batch of prompts, txt2img or from `init` (img2img/inpaint).

    `mask` (float [B, H, W], 1 = repaint) becomes the latent's noise_mask, as SetLatentNoiseMask does.
    """
    negatives = [negative] * len(prompts) if isinstance(negative, str) else negative
    if init is None:
        latent = empty_latent(len(prompts), size)
    else:
        latent = {"samples": vae.encode(torch.from_numpy(init).float() / 255)}
    if mask is not None:
        latent["noise_mask"] = torch.from_numpy(mask).float()[:, None]
    out = denoised(model, conditioning(clip, prompts), conditioning(clip, negatives), latent, seed=seed,
                   steps=steps, cfg=cfg, sampler=sampler, scheduler=scheduler, denoise=denoise)
    return to_uint8(vae.decode(out))


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


def prompt_following(model, clip, vae, *, cfg: float, n: int = 100, steps: int = 20, seed: int = 0) -> dict:
    """Colour, shape and background accuracy of the evaluator over n generated prompts (20 Euler steps, as the
    default workflow samples)."""
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
    out = denoised(model, conditioning(clip, prompts), conditioning(clip, [""] * n),
                   {"samples": source, "noise_mask": mask}, seed=seed, steps=12)
    change = (out - source).abs().mean(dim=1)  # [n, 8, 8]
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[2:6, 2:6] = True
    pixels = np.abs(to_uint8(vae.decode(out)).astype(np.float32) - to_uint8(vae.decode(source))).mean(axis=3)
    outside_px = np.ones((64, 64), bool)
    outside_px[12:52, 12:52] = False
    return {"latent_inside": float(change[:, inside].mean()), "latent_outside": float(change[:, ~inside].mean()),
            "pixel_inside": float(pixels[:, 16:48, 16:48].mean()), "pixel_outside": float(pixels[:, outside_px].mean())}


def with_lora(model, clip, strength: float, path: str | Path = DEMO_LORA) -> tuple:
    """(MODEL, CLIP) patched as LoraLoader patches them (both strengths = `strength`); every key must match."""
    model, clip, unmatched = apply_patch_file(read_state_dict(path), model, clip, strength, strength)
    if unmatched:
        raise ValueError(f"{len(unmatched)} keys of {path} matched no weight, e.g. {unmatched[:3]}")
    return model, clip


def style_prompts(n: int, *, trigger: bool = True) -> list[str]:
    """n prompts of coloured shapes (not white or black, whose outline ink can match the fill) on varied backgrounds."""
    colours = [c for c in COLOURS if c not in ("white", "black")]
    out = []
    for i in range(n):
        colour, shape = colours[i % len(colours)], SHAPES[i % len(SHAPES)]
        bg = [b for b in BACKGROUNDS if b != colour][i % (len(BACKGROUNDS) - 1)]
        said = {"colour": colour, "shape": shape, "background": bg}
        out.append(caption_of({"style": "outlined", **said} if trigger else said))
    return out


def outline_ceiling(vae, *, n: int = 16, seed: int = 6) -> float:
    """Mean outline score of outlined renders (coloured shapes) after the VAE's round trip.

    A LoRA can draw no clearer outline than its base's decoder can reproduce, so this bounds what
    `lora_style` can measure on a given base.
    """
    images, scenes = make_dataset(2 * n, seed=seed, outlined=True)
    images = images[[s.colour not in ("white", "black") for s in scenes]][:n]
    decoded = to_uint8(vae.decode(vae.encode(torch.from_numpy(images).float() / 255)))
    return float(np.mean([outline_score(im) for im in decoded]))


def lora_style(model, clip, vae, *, n: int = 16, steps: int = 12, seed: int = 5,
               path: str | Path = DEMO_LORA) -> dict:
    """Mean outline score of the demo LoRA's pictures at strength 0 and 1 (with the trigger word) and at
    strength 1 without it; `identical_at_0` says strength 0 reproduces the base model's pixels exactly and
    `mean_abs_change_at_1` how far strength 1 moves them; `vae_ceiling` is `outline_ceiling` (what the base's
    VAE lets any outline score reach)."""
    prompts, plain = style_prompts(n), style_prompts(n, trigger=False)
    base = sample(model, clip, vae, prompts, seed=seed, steps=steps)
    off, on = (with_lora(model, clip, strength, path) for strength in (0.0, 1.0))
    at_0, at_1 = (sample(*patched, vae, prompts, seed=seed, steps=steps) for patched in (off, on))
    without_trigger = sample(*on, vae, plain, seed=seed, steps=steps)

    def score(images: np.ndarray) -> float:
        return float(np.mean([outline_score(im) for im in images]))

    return {"vae_ceiling": outline_ceiling(vae), "outline_strength_0": score(at_0),
            "identical_at_0": bool(np.array_equal(at_0, base)), "outline_strength_1": score(at_1),
            "mean_abs_change_at_1": float(np.abs(at_1.astype(np.float32) - base).mean()),  # 0..255
            "outline_strength_1_without_trigger": score(without_trigger)}


def placement_scenes(n: int, seed: int) -> tuple[list[Scene], list[str]]:
    """Scenes at random positions and prompts that describe everything but the position."""
    _, scenes = make_dataset(n, seed=seed)
    prompts = [caption_of({k: v for k, v in describe(s).items() if k != "position"}) for s in scenes]
    return scenes, prompts


def controlled(clip, prompts: list[str], hints: np.ndarray, strength: float = 1.0,
               path: str | Path = DEMO_CONTROLNET) -> tuple[list, list]:
    """(positive, negative) CONDITIONING with the ControlNet attached as ControlNetLoader and
    ControlNetApplyAdvanced attach it; `hints` uint8 [n, 64, 64, 3] is the IMAGE batch LoadImage would give."""
    image = torch.tensor(hints).float() / 255  # a copy: hints may be a read-only view of a PIL image
    control, shared = load_controlnet(str(path)), {}
    positive, negative = conditioning(clip, prompts), conditioning(clip, [""] * len(prompts))
    return tuple(apply_control(c, control, image.movedim(-1, 1), strength, 0.0, 1.0, shared)
                 for c in (positive, negative))


def sample_controlled(model, clip, vae, prompt: str, hint: np.ndarray, *, seed: int = 0, steps: int = 12) -> np.ndarray:
    """One picture (uint8 [64, 64, 3]) for `prompt` with the demo ControlNet fed `hint` (uint8 [64, 64, 3])."""
    out = denoised(model, *controlled(clip, [prompt], hint[None]), empty_latent(1), seed=seed, steps=steps)
    return to_uint8(vae.decode(out))[0]


def controlnet_placement(model, clip, vae, *, n: int = 16, steps: int = 12, seed: int = 4, strength: float = 1.0,
                         path: str | Path = DEMO_CONTROLNET) -> dict:
    """Mean IoU between the evaluator's region and the edge map's shape, with the demo ControlNet and without."""
    scenes, prompts = placement_scenes(n, seed + 3000)
    hints = np.stack([edge_map(s) for s in scenes])
    runs = {"iou": controlled(clip, prompts, hints, strength, path),
            "iou_without_controlnet": (conditioning(clip, prompts), conditioning(clip, [""] * n))}
    result = {}
    for label, (positive, negative) in runs.items():
        images = to_uint8(vae.decode(denoised(model, positive, negative, empty_latent(n), seed=seed, steps=steps)))
        result[label] = float(np.mean([iou(read_image(im).mask, shape_mask(s)) for im, s in zip(images, scenes)]))
    return result
