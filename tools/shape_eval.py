"""Reads a 64x64 picture back into (colour, shape, background, region): the demo model's judge."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from tools.demo_data import BACKGROUNDS, COLOURS, SHAPES, Scene, shape_mask

TEMPLATE = 24


@dataclass(frozen=True)
class Reading:
    """What the evaluator sees in one image."""

    colour: str
    shape: str
    background: str
    mask: np.ndarray  # bool [H, W], the foreground region
    colour_distance: float  # RGB distance of the foreground median to the chosen palette colour


def _nearest(rgb: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> tuple[str, float]:
    names = list(palette)
    d = np.linalg.norm(np.array([palette[n] for n in names], dtype=np.float32) - rgb[None], axis=1)
    return names[int(d.argmin())], float(d.min())


def _otsu(values: np.ndarray) -> float:
    """The threshold that best splits values into two classes (Otsu 1979)."""
    hist, edges = np.histogram(values, bins=64)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    return float(centres[int(np.argmax(w0 * w1 * (m0 - m1) ** 2))])


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """Keeps the biggest 4-connected region so stray specks do not distort the shape's outline."""
    labels = np.zeros(mask.shape, dtype=np.int32)
    best, best_size, current = 0, 0, 0
    h, w = mask.shape
    for y0, x0 in zip(*np.nonzero(mask)):
        if labels[y0, x0]:
            continue
        current += 1
        stack, size = [(y0, x0)], 0
        labels[y0, x0] = current
        while stack:
            y, x = stack.pop()
            size += 1
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = current
                    stack.append((ny, nx))
        if size > best_size:
            best, best_size = current, size
    return labels == best if best else mask


def _crop_to_template(mask: np.ndarray) -> np.ndarray:
    """The mask cropped to its bounding box and resized to TEMPLATE x TEMPLATE floats."""
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.float32)
    img = Image.fromarray((crop * 255).astype(np.uint8)).resize((TEMPLATE, TEMPLATE), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.float32) / 255


@lru_cache(maxsize=1)
def _templates() -> dict[str, np.ndarray]:
    out = {}
    for shape in SHAPES:
        m = shape_mask(Scene(shape, "red", "white", "large", "center", 32.0, 32.0, 20.0))
        out[shape] = _crop_to_template(m)
    return out


def classify_shape(mask: np.ndarray) -> str:
    """The shape whose bounding-box-normalised template overlaps the mask best (soft IoU)."""
    if mask.sum() < 4:
        return "none"
    m = _crop_to_template(mask)
    scores = {s: float(np.minimum(m, t).sum() / np.maximum(m, t).sum()) for s, t in _templates().items()}
    return max(scores, key=scores.get)


def read_image(image: np.ndarray) -> Reading:
    """Reads one uint8 or 0..1 float [H, W, 3] image: background from the border, shape from the rest."""
    img = image.astype(np.float32)
    if img.max() <= 1.0 + 1e-6 and image.dtype != np.uint8:
        img = img * 255
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    bg_rgb = np.median(border, axis=0)
    background, _ = _nearest(bg_rgb, BACKGROUNDS)
    dist = np.linalg.norm(img - bg_rgb, axis=2)
    mask = dist > max(_otsu(dist), 40.0)
    if mask.sum() < 4:
        return Reading("none", "none", background, mask, float("inf"))
    mask = _largest_component(mask)
    # The colour is read away from anti-aliased edges where possible.
    core = mask.copy()
    core[1:, :] &= mask[:-1, :]
    core[:-1, :] &= mask[1:, :]
    core[:, 1:] &= mask[:, :-1]
    core[:, :-1] &= mask[:, 1:]
    pixels = img[core] if core.sum() >= 4 else img[mask]
    colour, cd = _nearest(np.median(pixels, axis=0), COLOURS)
    return Reading(colour, classify_shape(mask), background, mask, cd)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _erode(mask: np.ndarray, steps: int) -> np.ndarray:
    """The mask shrunk by `steps` pixels (4-neighbourhood)."""
    m = mask.copy()
    for _ in range(steps):
        inner = m.copy()
        inner[1:, :] &= m[:-1, :]
        inner[:-1, :] &= m[1:, :]
        inner[:, 1:] &= m[:, :-1]
        inner[:, :-1] &= m[:, 1:]
        inner[[0, -1], :] = False
        inner[:, [0, -1]] = False
        m = inner
    return m


def outline_score(image: np.ndarray, band: int = 2) -> float:
    """How outlined the shape looks: the fraction of its rim that is ink, 0..1.

    The rim is the outer `band` pixels of the evaluator's region (an outline differs from the background,
    so it lies inside the region). Ink is near-black or near-white and far from both the background and
    the shape's interior colour, so a plain shape's anti-aliased edge does not count.
    """
    img = image.astype(np.float32) * (255 if image.dtype != np.uint8 and image.max() <= 1.0 + 1e-6 else 1)
    mask = read_image(img).mask
    rim = mask & ~_erode(mask, band)
    if not rim.any():
        return 0.0
    core = _erode(mask, band + 1)
    fill = np.median(img[core if core.sum() >= 4 else mask], axis=0)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    bg = np.median(border, axis=0)
    px = img[rim]
    inky = (px.max(axis=1) < 80) | (px.min(axis=1) > 180)
    distinct = (np.linalg.norm(px - bg, axis=1) > 60) & (np.linalg.norm(px - fill, axis=1) > 60)
    return float((inky & distinct).mean())
