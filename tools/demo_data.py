"""Procedural dataset of the demo model: 64x64 coloured shapes on plain backgrounds, with captions."""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
SUPERSAMPLE = 4

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "purple": (140, 60, 190),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": COLOURS["white"],
    "black": COLOURS["black"],
    "gray": (128, 128, 128),
    "blue": COLOURS["blue"],
    "green": COLOURS["green"],
    "yellow": COLOURS["yellow"],
}
SHAPES = ("circle", "square", "triangle", "star", "ring")
# Radii in pixels. Smaller shapes cover about two latent pixels of an f=8 VAE, too few to keep a star a star.
SIZES: dict[str, float] = {"small": 11.0, "medium": 15.0, "large": 19.0}
# Grid cell centres (fractions of the image) named as a person would say them.
POSITIONS: dict[str, tuple[float, float]] = {
    "top left": (0.27, 0.27), "top": (0.5, 0.27), "top right": (0.73, 0.27),
    "left": (0.27, 0.5), "center": (0.5, 0.5), "right": (0.73, 0.5),
    "bottom left": (0.27, 0.73), "bottom": (0.5, 0.73), "bottom right": (0.73, 0.73),
}
OUTLINE_COLOUR = (15, 15, 15)
OUTLINE_ON_DARK = (235, 235, 235)


@dataclass(frozen=True)
class Scene:
    """One picture's ground truth: what is drawn, where, and how big."""

    shape: str
    colour: str
    background: str
    size: str
    position: str
    cx: float  # centre in pixels
    cy: float
    radius: float
    outlined: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def sample_scene(rng: random.Random, *, outlined: bool = False) -> Scene:
    """Draws a random scene whose shape colour differs from its background and stays inside the frame."""
    shape = rng.choice(SHAPES)
    background = rng.choice(list(BACKGROUNDS))
    colour = rng.choice([c for c in COLOURS if c != background])
    size = rng.choice(list(SIZES))
    position = rng.choice(list(POSITIONS))
    radius = SIZES[size] * rng.uniform(0.9, 1.1)
    fx, fy = POSITIONS[position]
    margin = radius + 2
    cx = min(max(fx * SIZE + rng.uniform(-3, 3), margin), SIZE - margin)
    cy = min(max(fy * SIZE + rng.uniform(-3, 3), margin), SIZE - margin)
    return Scene(shape, colour, background, size, position, cx, cy, radius, outlined)


def shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    """Vertices of the polygonal shapes (None for round ones); all point up, none rotated."""
    if shape == "square":
        h = r * 0.85
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        return [(cx + r * math.cos(a), cy + r * 0.15 - r * math.sin(a))
                for a in (math.pi / 2, math.pi / 2 + 2 * math.pi / 3, math.pi / 2 + 4 * math.pi / 3)]
    if shape == "star":
        pts = []
        for k in range(10):
            rr = r if k % 2 == 0 else r * 0.45
            a = math.pi / 2 + k * math.pi / 5
            pts.append((cx + rr * math.cos(a), cy - rr * math.sin(a)))
        return pts
    return None


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float,
                fill: tuple[int, int, int], hole: tuple[int, int, int]) -> None:
    poly = shape_polygon(shape, cx, cy, r)
    if poly is not None:
        draw.polygon(poly, fill=fill)
        return
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    if shape == "ring":
        ri = r * 0.55
        draw.ellipse((cx - ri, cy - ri, cx + ri, cy + ri), fill=hole)


def render(scene: Scene) -> np.ndarray:
    """Renders a scene anti-aliased (4x supersampled) as uint8 [64, 64, 3]."""
    s = SUPERSAMPLE
    bg = BACKGROUNDS[scene.background]
    img = Image.new("RGB", (SIZE * s, SIZE * s), bg)
    draw = ImageDraw.Draw(img)
    cx, cy, r = scene.cx * s, scene.cy * s, scene.radius * s
    if scene.outlined:
        ink = OUTLINE_ON_DARK if sum(bg) < 200 or sum(COLOURS[scene.colour]) < 200 else OUTLINE_COLOUR
        width = 3.0 * s  # thinner outlines do not survive an f=8 VAE of this size
        _draw_shape(draw, scene.shape, cx, cy, r + width, ink, ink)
        _draw_shape(draw, scene.shape, cx, cy, r, COLOURS[scene.colour], bg)
        if scene.shape == "ring":  # the hole gets its own outline
            ri = r * 0.55
            draw.ellipse((cx - ri, cy - ri, cx + ri, cy + ri), fill=ink)
            ri -= width
            draw.ellipse((cx - ri, cy - ri, cx + ri, cy + ri), fill=bg)
    else:
        _draw_shape(draw, scene.shape, cx, cy, r, COLOURS[scene.colour], bg)
    return np.asarray(img.resize((SIZE, SIZE), Image.Resampling.BOX), dtype=np.uint8)


def shape_mask(scene: Scene) -> np.ndarray:
    """The shape's region (bool [64, 64]) without outline: the ground truth for position checks."""
    s = SUPERSAMPLE
    img = Image.new("L", (SIZE * s, SIZE * s), 0)
    _draw_shape(ImageDraw.Draw(img), scene.shape, scene.cx * s, scene.cy * s, scene.radius * s, 255, 0)
    return np.asarray(img.resize((SIZE, SIZE), Image.Resampling.BOX)) >= 128


def edge_map(scene: Scene) -> np.ndarray:
    """White outline of the shape on black (uint8 [64, 64, 3]): the ControlNet's hint image."""
    m = shape_mask(scene)
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    edge = (m & ~inner).astype(np.uint8) * 255
    return np.repeat(edge[..., None], 3, axis=2)


def describe(scene: Scene, rng: random.Random | None = None) -> dict[str, str]:
    """The attributes a caption mentions; with an rng some are dropped so partial prompts work too."""
    keep = (lambda p: rng.random() < p) if rng else (lambda p: True)
    if rng and rng.random() < 0.05:
        return {"colour": scene.colour}  # bare colour words make negative prompts like "red" meaningful
    said = {"shape": scene.shape if keep(0.9) else "shape"}
    if scene.outlined:
        said["style"] = "outlined"
    if scene.size != "medium" and keep(0.7):
        said["size"] = scene.size
    if keep(0.85):
        said["colour"] = scene.colour
    if keep(0.7):
        said["background"] = scene.background
    if keep(0.6):
        said["position"] = scene.position
    return said


def caption_of(said: dict[str, str]) -> str:
    """Words for described attributes: "[outlined] [small|large] <colour> <shape> on a <bg> background, <where>"."""
    if "shape" not in said:
        return said.get("colour", "")
    words = [said[k] for k in ("style", "size", "colour", "shape") if k in said]
    text = " ".join(words)
    text = ("an " if text[0] in "aeiou" else "a ") + text
    if "background" in said:
        text += f" on a {said['background']} background"
    if "position" in said:
        text += f", {said['position']}"
    return text


def caption(scene: Scene, rng: random.Random | None = None) -> str:
    """The scene's caption, e.g. "a red circle on a blue background, top left" (partial with an rng)."""
    return caption_of(describe(scene, rng))


def make_dataset(n: int, seed: int, *, outlined: bool = False) -> tuple[np.ndarray, list[Scene]]:
    """n rendered scenes (uint8 [n, 64, 64, 3]) and their ground truth, deterministic from the seed."""
    rng = random.Random(seed)
    scenes = [sample_scene(rng, outlined=outlined) for _ in range(n)]
    return np.stack([render(s) for s in scenes]), scenes


def dataset_spec() -> dict:
    """The dataset's vocabulary, stored in the checkpoint metadata so the model documents itself."""
    return {
        "image_size": SIZE, "shapes": list(SHAPES), "colours": COLOURS, "backgrounds": BACKGROUNDS,
        "sizes": SIZES, "positions": POSITIONS,
        "caption": "a [small|large] <colour> <shape> [on a <background> background][, <position>]",
    }
