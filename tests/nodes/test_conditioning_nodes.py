"""Conditioning nodes: text encoding through a tiny real CLIP, and the conditioning list edits."""

import os

import pytest
import torch

from diffusion.clip_handle import ClipHandle
from diffusion.models.text_encoders import build_encoder, family_configs, tiny_config
from nodes import conditioning as C


def tiny_clip(family="sd1"):
    encoders = {c.name: build_encoder(tiny_config(family, width=32, layers=2, encoder=c.name),
                                      dtype=torch.float32, generator=torch.Generator().manual_seed(i))
                for i, c in enumerate(family_configs(family))}
    return ClipHandle(encoders, family)


@pytest.fixture(scope="module")
def sd1_clip():
    return tiny_clip("sd1")


def cond(value, tokens=2, dim=3, **opts):
    return [[torch.full((1, tokens, dim), float(value)), dict(opts)]]


def test_clip_text_encode_returns_the_clip_encoding_with_its_pooled_output(ctx, sd1_clip):
    out = C.clip_text_encode(ctx, "a red fox", sd1_clip)
    expected, pooled = sd1_clip.encode("a red fox")
    assert len(out) == 1 and torch.equal(out[0][0], expected)
    assert out[0][0].shape == (1, 77, 32)
    assert set(out[0][1]) == {"pooled_output"}
    assert (out[0][1]["pooled_output"] is None) == (pooled is None)
    assert not torch.equal(C.clip_text_encode(ctx, "a blue fox", sd1_clip)[0][0], expected)


def test_clip_text_encode_warns_about_a_missing_embedding_and_still_encodes(ctx, sd1_clip, paths):
    os.makedirs(paths.folder_paths("embeddings")[0], exist_ok=True)
    out = C.clip_text_encode(ctx, "embedding:nothere cat", sd1_clip)
    assert out[0][0].shape == (1, 77, 32)
    assert any("nothere" in w for w in ctx.warnings)


def test_clip_text_encode_without_a_text_encoder_explains_the_checkpoint_has_none(ctx):
    with pytest.raises(RuntimeError, match="does not contain a valid clip or text encoder"):
        C.clip_text_encode(ctx, "x", None)


def test_clip_set_last_layer_changes_the_encoding_of_a_clone_only(ctx, sd1_clip):
    skipped = C.clip_set_last_layer(sd1_clip, -2)
    assert skipped is not sd1_clip and sd1_clip.layer is None and skipped.layer == -2
    assert not torch.equal(skipped.encode("cat")[0], sd1_clip.encode("cat")[0])


def test_clip_text_encode_sdxl_adds_the_size_conditioning(ctx):
    clip = tiny_clip("sdxl")
    out = C.clip_text_encode_sdxl(ctx, clip, 1024, 768, 8, 16, 2048, 1536, "a castle", "stone")
    t, d = out[0]
    assert torch.equal(t, clip.encode_sdxl("a castle", "stone")[0])
    assert d["pooled_output"] is not None
    assert {k: d[k] for k in ("width", "height", "crop_w", "crop_h", "target_width", "target_height")} == \
        {"width": 1024, "height": 768, "crop_w": 8, "crop_h": 16, "target_width": 2048, "target_height": 1536}
    ref = C.clip_text_encode_sdxl_refiner(ctx, 2.5, 640, 480, "a castle", clip)[0][1]
    assert (ref["aesthetic_score"], ref["width"], ref["height"]) == (2.5, 640, 480)


def test_conditioning_combine_is_list_concatenation():
    a, b = cond(1), cond(2)
    assert C.conditioning_combine(a, b) == a + b


def test_conditioning_concat_appends_the_first_from_entry_on_the_token_axis(ctx):
    out = C.conditioning_concat(ctx, cond(1, strength=0.5), cond(2, tokens=3) + cond(9))
    assert out[0][0].shape == (1, 5, 3) and out[0][0][0, :2].eq(1).all() and out[0][0][0, 2:].eq(2).all()
    assert out[0][1] == {"strength": 0.5}
    assert ctx.warnings


def test_conditioning_average_weights_tokens_and_pooled_and_pads_from(ctx):
    to = [[torch.ones(1, 4, 2), {"pooled_output": torch.ones(1, 2)}]]
    frm = [[torch.full((1, 2, 2), 3.0), {"pooled_output": torch.full((1, 2), 5.0)}]]
    t, d = C.conditioning_average(ctx, to, frm, 0.25)[0]
    assert t[0, :2].tolist() == [[2.5, 2.5]] * 2          # 1·0.25 + 3·0.75
    assert t[0, 2:].tolist() == [[0.25, 0.25]] * 2        # from zero-padded
    assert d["pooled_output"].tolist() == [[4.0, 4.0]]    # 1·0.25 + 5·0.75
    no_pool = C.conditioning_average(ctx, [[torch.ones(1, 1, 2), {}]], frm, 0.5)[0][1]
    assert no_pool["pooled_output"].tolist() == [[5.0, 5.0]]  # missing pooled_to replaced by from's


def test_conditioning_set_area_uses_latent_units_in_h_w_y_x_order():
    src = cond(1)
    out = C.conditioning_set_area(src, 256, 128, 64, 32, 0.7)
    assert out[0][1] == {"area": (16, 32, 4, 8), "strength": 0.7, "set_area_to_bounds": False}
    assert src[0][1] == {}  # the input is never mutated


def test_conditioning_set_area_percentage_and_strength():
    out = C.conditioning_set_area_percentage(cond(1), 0.5, 0.25, 0.1, 0.2, 2.0)
    assert out[0][1]["area"] == ("percentage", 0.25, 0.5, 0.2, 0.1) and out[0][1]["strength"] == 2.0
    assert C.conditioning_set_area_strength(cond(1), 3.0)[0][1] == {"strength": 3.0}


def test_conditioning_set_mask_makes_the_mask_3d_and_sets_bounds_flag():
    out = C.conditioning_set_mask(cond(1), torch.ones(4, 4), 0.5, "mask bounds")[0][1]
    assert out["mask"].shape == (1, 4, 4) and out["mask_strength"] == 0.5 and out["set_area_to_bounds"]
    assert not C.conditioning_set_mask(cond(1), torch.ones(1, 4, 4), 1.0, "default")[0][1]["set_area_to_bounds"]


def test_conditioning_set_timestep_range_sets_percentages():
    assert C.conditioning_set_timestep_range(cond(1), 0.2, 0.8)[0][1] == {"start_percent": 0.2, "end_percent": 0.8}


def test_conditioning_zero_out_zeros_tokens_and_pooled():
    t, d = C.conditioning_zero_out([[torch.ones(1, 2, 3), {"pooled_output": torch.ones(1, 4), "x": 1}]])[0]
    assert t.shape == (1, 2, 3) and t.eq(0).all() and d["pooled_output"].eq(0).all() and d["x"] == 1
