"""The demo evaluator reads the procedural ground truth back correctly."""

import random
from dataclasses import replace

import numpy as np
from PIL import Image, ImageFilter

from tools.demo_data import caption, make_dataset, render, sample_scene, shape_mask
from tools.shape_eval import iou, outline_score, read_image


def test_evaluator_reads_colour_shape_and_background_of_clean_renders():
    images, scenes = make_dataset(150, seed=11)
    readings = [read_image(im) for im in images]
    assert all(r.colour == s.colour for r, s in zip(readings, scenes))
    assert all(r.background == s.background for r, s in zip(readings, scenes))
    assert np.mean([r.shape == s.shape for r, s in zip(readings, scenes)]) >= 0.98


def test_evaluator_still_reads_blurred_noisy_renders_like_a_decoder_makes():
    images, scenes = make_dataset(150, seed=12)
    rng = np.random.default_rng(0)
    hits_colour = hits_shape = 0
    for im, s in zip(images, scenes):
        x = np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(0.8)), dtype=np.float32)
        x = np.clip(x + rng.normal(0, 10, x.shape), 0, 255) / 255  # float 0..1 input, as IMAGE tensors are
        r = read_image(x)
        hits_colour += r.colour == s.colour
        hits_shape += r.shape == s.shape
    assert hits_colour / len(scenes) >= 0.98
    assert hits_shape / len(scenes) >= 0.9


def test_foreground_region_matches_the_drawn_shape():
    images, scenes = make_dataset(40, seed=13)
    assert min(iou(read_image(im).mask, shape_mask(s)) for im, s in zip(images, scenes)) >= 0.8


def test_captions_name_what_is_drawn_and_dropout_keeps_the_shape_or_says_shape():
    rng = random.Random(0)
    scene = sample_scene(rng)
    full = caption(scene)
    assert scene.colour in full and scene.shape in full and f"on a {scene.background} background" in full
    partial = [caption(scene, rng) for _ in range(200)]
    assert any(p != full for p in partial)
    assert all(scene.shape in p or "shape" in p or p == scene.colour for p in partial)


def test_dataset_is_deterministic_from_its_seed():
    a, sa = make_dataset(8, seed=5)
    b, sb = make_dataset(8, seed=5)
    assert np.array_equal(a, b) and sa == sb


def test_outline_score_tells_outlined_renders_from_plain_ones():
    outlined, scenes = make_dataset(100, seed=13, outlined=True)
    plain = [render(replace(s, outlined=False)) for s in scenes]
    coloured = [i for i, s in enumerate(scenes) if s.colour not in ("white", "black")]
    assert np.mean([outline_score(outlined[i]) for i in coloured]) >= 0.5
    assert np.mean([outline_score(plain[i]) for i in coloured]) <= 0.05
    blurred = np.asarray(Image.fromarray(outlined[coloured[0]]).filter(ImageFilter.GaussianBlur(0.6)))
    assert outline_score(blurred) > outline_score(plain[coloured[0]])
