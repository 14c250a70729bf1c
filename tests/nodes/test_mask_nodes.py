"""Mask nodes do what nodes.md says, on tiny masks."""

import pytest
import torch

from nodes import mask as M


def test_image_to_mask_takes_the_named_channel():
    img = torch.zeros(1, 2, 2, 4)
    img[..., 1] = 0.5
    img[..., 3] = 0.25
    assert M.image_to_mask(img, "green").eq(0.5).all()
    assert M.image_to_mask(img, "alpha").eq(0.25).all()
    assert M.image_to_mask(img, "red").shape == (1, 2, 2)


def test_image_to_mask_alpha_of_an_rgb_image_is_an_error():
    with pytest.raises(ValueError, match="no alpha channel"):
        M.image_to_mask(torch.zeros(1, 2, 2, 3), "alpha")


def test_mask_to_image_repeats_into_three_channels():
    m = torch.rand(2, 3, 4, generator=torch.Generator().manual_seed(0))
    out = M.mask_to_image(m)
    assert out.shape == (2, 3, 4, 3) and all(torch.equal(out[..., c], m) for c in range(3))
    assert M.mask_to_image(torch.ones(3, 4)).shape == (1, 3, 4, 3)


def test_solid_mask_is_filled_with_the_value():
    out = M.solid_mask(0.25, 5, 3)
    assert out.shape == (1, 3, 5) and out.eq(0.25).all()


def test_invert_mask_is_one_minus_mask():
    assert M.invert_mask(torch.tensor([[[0.0, 0.25]]])).tolist() == [[[1.0, 0.75]]]


def dot(size=7):
    m = torch.zeros(1, size, size)
    m[0, size // 2, size // 2] = 1
    return m


def test_grow_mask_with_tapered_corners_grows_a_diamond():
    out = M.grow_mask(dot(), 2, True)[0]
    ys, xs = torch.nonzero(out, as_tuple=True)
    assert ((ys - 3).abs() + (xs - 3).abs()).max() == 2
    assert out.sum() == 13


def test_grow_mask_without_tapered_corners_grows_a_square():
    out = M.grow_mask(dot(), 2, False)[0]
    assert out.sum() == 25 and out[1:6, 1:6].eq(1).all()


def test_negative_expand_shrinks_the_mask():
    m = torch.zeros(1, 7, 7)
    m[0, 1:6, 1:6] = 1
    out = M.grow_mask(m, -1, False)[0]
    assert out.sum() == 9 and out[2:5, 2:5].eq(1).all()
    assert torch.equal(M.grow_mask(m, 0, True), m)


def test_grow_mask_keeps_grey_levels_as_maxima():
    m = torch.zeros(1, 3, 3)
    m[0, 1, 1] = 0.4
    assert M.grow_mask(m, 1, True)[0, 0, 1] == pytest.approx(0.4)


def test_feather_mask_ramps_linearly_at_each_edge():
    out = M.feather_mask(torch.ones(1, 4, 6), 2, 0, 3, 2)[0]
    assert out[0].tolist() == pytest.approx([0.5, 1.0, 1.0, 1.0, 2 / 3, 1 / 3])
    assert out[:, 2].tolist() == pytest.approx([1.0, 1.0, 1.0, 0.5])


def test_feather_mask_top_ramp_and_clamping_to_the_size():
    out = M.feather_mask(torch.ones(1, 2, 2), 0, 5, 0, 0)[0]
    assert out[:, 0].tolist() == pytest.approx([0.5, 1.0])


def test_threshold_mask_is_strictly_greater_than():
    out = M.threshold_mask(torch.tensor([[[0.2, 0.5, 0.7]]]), 0.5)
    assert out.tolist() == [[[0.0, 0.0, 1.0]]]
