"""Latent nodes do what nodes.md says, on tiny latents."""

import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from nodes import latent as L


def grid(b=1, c=4, h=8, w=8, seed=0):
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def test_empty_latent_image_is_zeros_of_one_eighth_size():
    out = L.empty_latent_image(width=64, height=40, batch_size=3)
    assert out["samples"].shape == (3, 4, 5, 8)
    assert out["samples"].abs().sum() == 0


def test_latent_upscale_resizes_to_one_eighth_of_the_pixel_size_and_keeps_other_keys():
    mask = torch.ones(1, 1, 8, 8)
    out = L.latent_upscale({"samples": grid(), "noise_mask": mask}, "nearest-exact", 128, 96, "disabled")
    assert out["samples"].shape == (1, 4, 12, 16)
    assert out["noise_mask"] is mask


def test_latent_upscale_with_zero_width_keeps_the_aspect_ratio_and_both_zero_is_unchanged():
    s = grid(h=8, w=16)
    assert L.latent_upscale({"samples": s}, "bilinear", 0, 128, "disabled")["samples"].shape == (1, 4, 16, 32)
    assert torch.equal(L.latent_upscale({"samples": s}, "bilinear", 0, 0, "disabled")["samples"], s)


def test_latent_upscale_enforces_at_least_64_pixels_per_side():
    out = L.latent_upscale({"samples": grid()}, "area", 16, 16, "disabled")
    assert out["samples"].shape == (1, 4, 8, 8)


def test_latent_upscale_nearest_doubling_repeats_each_latent_pixel():
    s = grid(h=2, w=2)
    out = L.latent_upscale({"samples": s}, "nearest-exact", 128, 128, "disabled")["samples"]
    assert out.shape == (1, 4, 16, 16)
    assert torch.equal(out[..., ::8, ::8], s)


def test_latent_upscale_center_crop_takes_the_middle_to_match_the_aspect():
    s = torch.arange(16.0).view(1, 1, 1, 16).expand(1, 4, 8, 16).contiguous()
    out = L.latent_upscale({"samples": s}, "nearest-exact", 64, 64, "center")["samples"]
    assert out.shape == (1, 4, 8, 8)
    assert torch.equal(out[0, 0, 0], torch.arange(4.0, 12.0))


def test_bislerp_keeps_vector_norms_between_neighbours():
    s = grid(h=4, w=4)
    out = L.latent_upscale({"samples": s}, "bislerp", 64, 64, "disabled")["samples"]
    assert out.shape == (1, 4, 8, 8)
    norms = s.norm(dim=1)
    assert out.norm(dim=1).max() <= norms.max() + 1e-4
    assert out.norm(dim=1).min() >= norms.min() - 1e-4


def test_latent_upscale_by_rounds_the_scaled_size():
    out = L.latent_upscale_by({"samples": grid(h=5, w=7)}, "bicubic", 1.5)
    assert out["samples"].shape == (1, 4, 8, 10)  # round(7.5)=8, round(10.5)=10


def test_latent_composite_pastes_at_eighths_and_truncates_at_the_border():
    to, frm = torch.zeros(1, 4, 8, 8), torch.ones(1, 4, 6, 6)
    out = L.latent_composite({"samples": to}, {"samples": frm}, x=32, y=16, feather=0)["samples"]
    expected = torch.zeros(1, 4, 8, 8)
    expected[:, :, 2:, 4:] = 1
    assert torch.equal(out, expected)
    assert to.sum() == 0  # input not mutated


def test_latent_composite_feathers_only_edges_inside_the_target():
    to, frm = torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 4, 4)
    out = L.latent_composite({"samples": to}, {"samples": frm}, x=16, y=0, feather=16)["samples"][0, 0]
    # top edge at y=0 is the border: no ramp in y there; left edge at x=2 ramps 0.5, 1.0
    assert torch.allclose(out[0, 2:6], torch.tensor([0.5, 1.0, 1.0, 0.5]))
    assert torch.allclose(out[3, 2:6], torch.tensor([0.25, 0.5, 0.5, 0.25]))


def test_latent_composite_masked_uses_the_mask_resized_to_the_source():
    dest, src = torch.zeros(1, 4, 8, 8), torch.ones(1, 4, 4, 4)
    mask = torch.zeros(1, 4, 4)
    mask[:, :, :2] = 1
    out = L.latent_composite_masked({"samples": dest}, {"samples": src}, 8, 8, False, mask)["samples"]
    assert out[0, 0, 1:5, 1:3].eq(1).all() and out[0, 0, 1:5, 3:5].eq(0).all()
    assert out.sum() == 4 * 4 * 2


def test_latent_composite_masked_resize_source_fills_the_destination():
    out = L.latent_composite_masked({"samples": torch.zeros(1, 4, 8, 8)}, {"samples": torch.ones(1, 4, 2, 2)},
                                    0, 0, True)["samples"]
    assert out.eq(1).all()


def test_latent_blend_mixes_with_factor_on_the_first():
    a, b = torch.ones(1, 4, 4, 4), torch.zeros(1, 4, 4, 4)
    out = L.latent_blend({"samples": a}, {"samples": b}, 0.25)["samples"]
    assert torch.allclose(out, torch.full_like(a, 0.25))


def test_latent_from_batch_slices_clamps_and_records_batch_index():
    s = torch.arange(5.0).view(5, 1, 1, 1).expand(5, 4, 2, 2)
    mask = torch.arange(5.0).view(5, 1, 1, 1)
    out = L.latent_from_batch({"samples": s, "noise_mask": mask}, batch_index=3, length=4)
    assert out["samples"][:, 0, 0, 0].tolist() == [3.0, 4.0]
    assert out["batch_index"] == [3, 4]
    assert out["noise_mask"][:, 0, 0, 0].tolist() == [3.0, 4.0]


def test_latent_from_batch_keeps_existing_batch_indices():
    s = torch.zeros(3, 4, 2, 2)
    out = L.latent_from_batch({"samples": s, "batch_index": [10, 11, 12]}, batch_index=1, length=1)
    assert out["batch_index"] == [11]


def test_repeat_latent_batch_repeats_samples_masks_and_offsets_batch_index():
    s = torch.arange(2.0).view(2, 1, 1, 1).expand(2, 4, 2, 2)
    out = L.repeat_latent_batch({"samples": s, "noise_mask": torch.rand(2, 1, 2, 2,
                                 generator=torch.Generator().manual_seed(1)), "batch_index": [4, 5]}, 3)
    assert out["samples"][:, 0, 0, 0].tolist() == [0, 1, 0, 1, 0, 1]
    assert out["noise_mask"].shape[0] == 6
    assert out["batch_index"] == [4, 5, 6, 7, 8, 9]


def test_latent_batch_concatenates_and_resizes_the_second_to_the_first():
    out = L.latent_batch({"samples": torch.zeros(1, 4, 8, 8)}, {"samples": torch.ones(2, 4, 4, 4)})
    assert out["samples"].shape == (3, 4, 8, 8)
    assert out["samples"][1:].eq(1).all()
    assert out["batch_index"] == [0, 0, 1]


def test_latent_rotate_90_degrees_is_clockwise():
    s = torch.zeros(1, 4, 2, 3)
    s[:, :, 0, 0] = 1  # top-left
    out = L.latent_rotate({"samples": s}, "90 degrees")["samples"]
    assert out.shape == (1, 4, 3, 2)
    assert out[0, 0, 0, 1] == 1  # top-right after a clockwise turn
    assert torch.equal(L.latent_rotate({"samples": s}, "none")["samples"], s)
    assert L.latent_rotate({"samples": s}, "180 degrees")["samples"][0, 0, 1, 2] == 1
    assert L.latent_rotate({"samples": s}, "270 degrees")["samples"][0, 0, 2, 0] == 1


def test_latent_flip_x_axis_flips_rows_and_y_axis_flips_columns():
    s = torch.arange(4.0).view(1, 1, 2, 2)
    assert L.latent_flip({"samples": s}, "x-axis: vertically")["samples"].flatten().tolist() == [2, 3, 0, 1]
    assert L.latent_flip({"samples": s}, "y-axis: horizontally")["samples"].flatten().tolist() == [1, 0, 3, 2]


def test_latent_crop_cuts_in_eighths_and_clamps_the_origin():
    s = torch.arange(16.0).view(1, 1, 1, 16).expand(1, 4, 16, 16)
    out = L.latent_crop({"samples": s}, 64, 64, 8 * 12, 0)["samples"]
    assert out.shape == (1, 4, 8, 8)
    assert out[0, 0, 0, 0] == 8  # x clamped to 16 - 8


def test_set_latent_noise_mask_stores_a_4d_mask_copy_of_the_latent():
    lat = {"samples": torch.zeros(1, 4, 2, 2)}
    out = L.set_latent_noise_mask(lat, torch.ones(16, 16))
    assert out["noise_mask"].shape == (1, 1, 16, 16)
    assert "noise_mask" not in lat


def test_save_latent_writes_a_versioned_safetensors_file_that_load_latent_reads_back(ctx, paths):
    s = grid(b=2)
    res = L.save_latent(ctx, {"samples": s}, "latents/run", prompt={"1": {"class_type": "X", "inputs": {}}},
                        extra_pnginfo={"workflow": {"nodes": []}})
    assert res.ui == {"latents": [{"filename": "run_00001_.latent", "subfolder": "latents", "type": "output"}]}
    path = os.path.join(paths.output_dir, "latents", "run_00001_.latent")
    data = load_file(path)
    assert set(data) == {"latent_tensor", "latent_format_version_0"}
    from safetensors import safe_open
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    assert meta["prompt"] == '{"1": {"class_type": "X", "inputs": {}}}'
    assert meta["workflow"] == '{"nodes": []}'
    os.replace(path, os.path.join(paths.input_dir, "run.latent"))
    assert L.load_latent.spec.inputs[0][1].resolve(paths) == ["run.latent"]
    assert torch.equal(L.load_latent(ctx, "run.latent")["samples"], s)
    assert L.save_latent(ctx, {"samples": s}, "latents/run").ui["latents"][0]["filename"] == "run_00001_.latent"


def test_load_latent_scales_old_format_files_without_the_version_marker(ctx, paths):
    s = torch.ones(1, 4, 2, 2)
    save_file({"latent_tensor": s}, os.path.join(paths.input_dir, "old.latent"))
    assert torch.allclose(L.load_latent(ctx, "old.latent")["samples"], s / 0.18215)


def test_load_latent_validation_rejects_missing_and_escaping_names(ctx):
    validate = L.load_latent.spec.validate_inputs
    assert validate(ctx, "nope.latent") == "Invalid latent file: nope.latent"
    assert validate(ctx, "../x.latent") == "Invalid latent file: ../x.latent"


def test_load_latent_fingerprint_changes_when_the_file_changes(ctx, paths):
    path = os.path.join(paths.input_dir, "a.latent")
    save_file({"latent_tensor": torch.zeros(1)}, path)
    first = L.load_latent.spec.is_changed(ctx, "a.latent")
    save_file({"latent_tensor": torch.ones(1)}, path)
    assert L.load_latent.spec.is_changed(ctx, "a.latent") != first
