"""Image nodes do what nodes.md says, on tiny images and real files in a temporary base folder."""

import hashlib
import json
import os
import re
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from engine.config import RuntimeConfig
from engine.errors import PathEscape
from nodes import image as I


def rand_image(b=1, h=8, w=8, c=3, seed=0):
    return torch.rand(b, h, w, c, generator=torch.Generator().manual_seed(seed))


def png_chunks(path):
    """(type, data) of every chunk of a PNG file."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, out = 8, []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        out.append((kind.decode(), data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return out


PROMPT = {"3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "caf\u00e9"}, "_meta": {"title": "S"}}}
WORKFLOW = {"workflow": {"last_node_id": 3, "nodes": [{"id": 3, "type": "SaveImage"}]}}


# -- SaveImage / PreviewImage / LoadImage ------------------------------------------------------------

def test_save_image_writes_numbered_pngs_with_prompt_and_workflow_text_chunks(ctx, paths):
    images = rand_image(b=2, h=6, w=5)
    res = I.save_image(ctx, images, "ComfyUI", prompt=PROMPT, extra_pnginfo=WORKFLOW)
    assert res.ui == {"images": [{"filename": "ComfyUI_00001_.png", "subfolder": "", "type": "output"},
                                 {"filename": "ComfyUI_00002_.png", "subfolder": "", "type": "output"}]}
    chunks = png_chunks(os.path.join(paths.output_dir, "ComfyUI_00001_.png"))
    kinds = [k for k, _ in chunks]
    assert kinds[:3] == ["IHDR", "tEXt", "tEXt"] and kinds.index("IDAT") == 3 and kinds[-1] == "IEND"
    texts = dict(d.split(b"\x00", 1) for k, d in chunks if k == "tEXt")
    assert texts[b"prompt"] == json.dumps(PROMPT).encode("ascii")
    assert b"\\u00e9" in texts[b"prompt"]  # non-ASCII escaped, so the chunk stays tEXt
    assert json.loads(texts[b"workflow"]) == WORKFLOW["workflow"]


def test_saved_png_loads_back_through_load_image_with_the_same_pixels(ctx, paths):
    images = rand_image(b=1, h=7, w=9, seed=3)
    name = I.save_image(ctx, images, "rt", prompt=PROMPT, extra_pnginfo=WORKFLOW).ui["images"][0]["filename"]
    loaded, mask = I.load_image(ctx, f"{name} [output]")
    expected = torch.from_numpy(np.clip(255 * images.numpy(), 0, 255).astype(np.uint8) / 255.0).float()
    assert torch.equal(loaded, expected)
    assert mask.shape == (1, 64, 64) and mask.sum() == 0


def test_save_image_truncates_to_uint8_rather_than_rounding(ctx, paths):
    img = torch.full((1, 2, 2, 3), 0.999)  # 254.745 → 254, not 255
    I.save_image(ctx, img, "t")
    assert np.array(Image.open(os.path.join(paths.output_dir, "t_00001_.png"))).max() == 254


def test_save_image_continues_after_the_highest_existing_counter_of_any_extension(ctx, paths):
    for name in ("ComfyUI_00007_.webp", "ComfyUI_00003_.png", "ComfyUI_x_.png", "Other_00099_.png"):
        open(os.path.join(paths.output_dir, name), "wb").close()
    res = I.save_image(ctx, rand_image(), "ComfyUI")
    assert res.ui["images"][0]["filename"] == "ComfyUI_00008_.png"


def test_save_image_prefix_subfolders_patterns_and_batch_num(ctx, paths):
    res = I.save_image(ctx, rand_image(b=2, h=4, w=6), "probe/./x/../img_%width%x%height%_%batch_num%")
    assert [e["filename"] for e in res.ui["images"]] == ["img_6x4_0_00001_.png", "img_6x4_1_00002_.png"]
    assert res.ui["images"][0]["subfolder"] == "probe"
    assert os.path.isfile(os.path.join(paths.output_dir, "probe", "img_6x4_0_00001_.png"))
    year = I.save_image(ctx, rand_image(), "%year%-%month%/a").ui["images"][0]["subfolder"]
    assert re.fullmatch(r"\d{4}-\d{2}", year)


def test_save_image_refuses_to_write_outside_the_output_folder(ctx, paths, tmp_path):
    with pytest.raises(PathEscape, match="outside the output folder"):
        I.save_image(ctx, rand_image(), "../../pwn/x")
    os.symlink(str(tmp_path), os.path.join(paths.output_dir, "link"))
    with pytest.raises(PathEscape):
        I.save_image(ctx, rand_image(), "link/../../x")
    assert not os.path.exists(os.path.join(tmp_path, "pwn"))


def test_disable_metadata_writes_no_text_chunks(paths):
    from tests.nodes.conftest import FakeContext
    ctx = FakeContext(paths=paths, config=RuntimeConfig(disable_metadata=True))
    I.save_image(ctx, rand_image(), "m", prompt=PROMPT, extra_pnginfo=WORKFLOW)
    assert "tEXt" not in [k for k, _ in png_chunks(os.path.join(paths.output_dir, "m_00001_.png"))]


def test_preview_image_writes_to_temp_and_reuses_its_random_suffix_per_node(ctx, paths):
    first = I.preview_image(ctx, rand_image()).ui["images"][0]
    second = I.preview_image(ctx, rand_image()).ui["images"][0]
    assert first["type"] == "temp"
    m = re.fullmatch(r"ComfyUI_temp_([a-z]{5})_00001_\.png", first["filename"])
    assert m and "w" not in m.group(1)
    assert second["filename"] == f"ComfyUI_temp_{m.group(1)}_00002_.png"
    assert os.path.isfile(os.path.join(paths.temp_dir, second["filename"]))


def _write(paths, name, img):
    path = os.path.join(paths.input_dir, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img.save(path)
    return path


def test_load_image_mask_is_one_minus_alpha(ctx, paths):
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba = np.dstack([np.full((3, 4), 200, np.uint8)] * 3 + [np.array([[0, 255, 51, 102]] * 3, np.uint8)])
    _write(paths, "a.png", Image.fromarray(rgba, "RGBA"))
    image, mask = I.load_image(ctx, "a.png")
    assert image.shape == (1, 3, 4, 3) and torch.allclose(image, torch.full_like(image, 200 / 255))
    assert torch.allclose(mask[0, 0], torch.tensor([1.0, 0.0, 0.8, 0.6]))


def test_load_image_mask_from_a_palette_transparency_entry(ctx, paths):
    pal = Image.new("P", (2, 2), 0)
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pal.putpixel((1, 0), 1)
    pal.info["transparency"] = 1
    _write(paths, "p.png", pal)
    _, mask = I.load_image(ctx, "p.png")
    assert mask[0].tolist() == [[0.0, 1.0], [0.0, 0.0]]


def test_load_image_scales_16_bit_grayscale_by_one_over_255(ctx, paths):
    _write(paths, "g.png", Image.fromarray(np.array([[0, 255 * 100]], dtype=np.uint16)))
    image, _ = I.load_image(ctx, "g.png")
    assert image[0, 0, :, 0].tolist() == pytest.approx([0.0, 100 / 255])


def test_load_image_applies_exif_orientation(ctx, paths):
    img = Image.new("RGB", (4, 2), (0, 0, 0))
    img.putpixel((0, 0), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    img.save(os.path.join(paths.input_dir, "e.jpg"), exif=exif, quality=100)
    image, _ = I.load_image(ctx, "e.jpg")
    assert image.shape[1:3] == (4, 2)
    assert image[0, 0, 1].mean() > 0.8  # top-left white pixel ends up top-right


def test_load_image_gives_one_batch_entry_per_same_size_frame(ctx, paths):
    frames = [Image.new("RGB", (3, 3), (v, v, v)) for v in (0, 128, 255)]
    frames[0].save(os.path.join(paths.input_dir, "anim.gif"), save_all=True, append_images=frames[1:])
    image, mask = I.load_image(ctx, "anim.gif")
    assert image.shape == (3, 3, 3, 3) and mask.shape[0] == 3
    assert image[2].min() > 0.99


def test_load_image_accepts_subfolders_and_refuses_escapes_with_the_validation_message(ctx, paths, tmp_path):
    _write(paths, "pasted/image.png", Image.new("RGB", (2, 2)))
    assert I.load_image.spec.validate_inputs(ctx, "pasted/image.png") is True
    open(tmp_path / "secret.png", "wb").write(b"x")
    os.symlink(str(tmp_path / "secret.png"), os.path.join(paths.input_dir, "link.png"))
    for bad in ("../secret.png", "link.png", "/etc/passwd", "missing.png", "secret.png [output]"):
        assert I.load_image.spec.validate_inputs(ctx, bad) == f"Invalid image file: {bad}"


def test_load_image_list_shows_only_images_directly_in_the_input_folder(ctx, paths):
    for name in ("b.png", "a.webp", "notes.txt"):
        open(os.path.join(paths.input_dir, name), "wb").close()
    os.makedirs(os.path.join(paths.input_dir, "sub"))
    open(os.path.join(paths.input_dir, "sub", "c.png"), "wb").close()
    image_combo = dict(I.load_image.spec.inputs)["image"]
    assert image_combo.resolve(paths) == ["a.webp", "b.png"]
    assert dict(I.load_image_mask.spec.inputs)["image"].resolve(paths) == ["a.webp", "b.png", "notes.txt"]


def test_load_image_fingerprint_is_the_sha256_of_the_file(ctx, paths):
    path = _write(paths, "h.png", Image.new("RGB", (2, 2)))
    expected = hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert I.load_image.spec.is_changed(ctx, image="h.png") == expected
    assert I.load_image_mask.spec.is_changed(ctx, image="h.png", channel="red") == expected


def test_load_image_refuses_images_beyond_the_decode_limit(ctx, paths):
    path = os.path.join(paths.input_dir, "bomb.png")
    Image.new("1", (20000, 1)).save(path)
    with pytest.raises(ValueError, match="too large"):
        I.load_image(ctx, "bomb.png")


def test_load_image_mask_picks_a_channel_and_inverts_alpha(ctx, paths):
    _write(paths, "m.png", Image.new("RGBA", (2, 2), (255, 51, 0, 255)))
    assert I.load_image_mask(ctx, "m.png", "red").tolist() == [[[1.0, 1.0], [1.0, 1.0]]]
    assert torch.allclose(I.load_image_mask(ctx, "m.png", "green"), torch.full((1, 2, 2), 0.2))
    assert I.load_image_mask(ctx, "m.png", "alpha").sum() == 0
    _write(paths, "rgb.png", Image.new("RGB", (2, 2), (0, 0, 0)))
    assert I.load_image_mask(ctx, "rgb.png", "alpha").sum() == 0  # opaque after RGBA conversion


# -- resizing ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"])
def test_image_scale_reaches_the_requested_size_and_keeps_a_flat_image_flat(method):
    img = torch.full((1, 6, 8, 3), 0.25)
    out = I.image_scale(img, method, 20, 9, "disabled")
    assert out.shape == (1, 9, 20, 3)
    assert torch.allclose(out, torch.full_like(out, 0.25), atol=1e-5)


def test_image_scale_zero_side_keeps_aspect_and_center_crop_takes_the_middle():
    img = torch.arange(8.0).view(1, 1, 8, 1).expand(1, 4, 8, 3)
    assert I.image_scale(img, "bilinear", 0, 8, "disabled").shape == (1, 8, 16, 3)
    assert I.image_scale(img, "bilinear", 0, 0, "disabled") is img
    out = I.image_scale(img, "nearest-exact", 4, 4, "center")
    assert out[0, 0, :, 0].tolist() == [2.0, 3.0, 4.0, 5.0]


def test_lanczos_downscale_matches_pil_within_one_level():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    pil = np.array(Image.fromarray(arr).resize((10, 7), Image.LANCZOS)).astype(np.float32)
    ours = I.image_scale(torch.from_numpy(arr / 255.0).float()[None], "lanczos", 10, 7, "disabled")
    assert np.abs(ours[0].numpy() * 255 - pil).max() <= 2.0


def test_image_scale_by_rounds_sizes():
    assert I.image_scale_by(rand_image(h=5, w=7), "area", 1.5).shape == (1, 8, 10, 3)


def test_image_scale_to_total_pixels_hits_the_pixel_budget_in_resolution_steps():
    out = I.image_scale_to_total_pixels(rand_image(h=10, w=20), "bilinear", 0.0005, 4)
    # 0.0005 MP = 524.288 px at 2:1 → 32.4 × 16.2 → multiples of 4: 32 × 16
    assert out.shape == (1, 16, 32, 3)


# -- simple transforms -------------------------------------------------------------------------------

def test_image_invert_is_one_minus_image():
    img = rand_image()
    assert torch.allclose(I.image_invert(img), 1 - img)


def test_image_batch_resizes_the_second_and_pads_missing_alpha_with_one():
    a, b = torch.zeros(1, 4, 4, 4), torch.full((2, 2, 2, 3), 0.5)
    out = I.image_batch(a, b)
    assert out.shape == (3, 4, 4, 4)
    assert torch.allclose(out[1:, ..., :3], torch.full((2, 4, 4, 3), 0.5)) and out[1:, ..., 3].eq(1).all()


def test_pad_for_outpaint_gray_border_and_feathered_mask():
    img = torch.zeros(1, 10, 10, 3)
    out, mask = I.image_pad_for_outpaint(img, 8, 0, 0, 0, 2)
    assert out.shape == (1, 10, 18, 3) and out[:, :, :8].eq(0.5).all() and out[:, :, 8:].eq(0).all()
    assert mask.shape == (1, 10, 18)
    assert mask[0, :, :8].eq(1).all()
    assert mask[0, 5, 8:12].tolist() == [1.0, 0.25, 0.0, 0.0]  # ((2 - d) / 2)^2 for d = 0, 1
    assert I.image_pad_for_outpaint(img, 8, 0, 0, 0, 5)[1][0, :, 8:].eq(0).all()  # 2·5 ≥ 10: no feather


def test_image_crop_clamps_the_origin_and_truncates_at_the_border():
    img = torch.arange(10.0).view(1, 1, 10, 1).expand(1, 10, 10, 3)
    out = I.image_crop(img, 4, 4, 8, 20)
    assert out.shape == (1, 1, 2, 3) and out[0, 0, :, 0].tolist() == [8.0, 9.0]


@pytest.mark.parametrize("mode,expected", [
    ("normal", 0.8), ("multiply", 0.16), ("screen", 0.84), ("overlay", 0.32),
    ("difference", 0.0)])
def test_image_blend_modes_at_full_factor(mode, expected):
    a, b = torch.full((1, 2, 2, 3), 0.2), torch.full((1, 2, 2, 3), 0.8)
    assert torch.allclose(I.image_blend(a, b, 1.0, mode), torch.full_like(a, expected), atol=1e-6)


def test_image_blend_soft_light_and_half_factor():
    a, b = torch.full((1, 1, 1, 3), 0.2), torch.full((1, 1, 1, 3), 0.8)
    g = ((16 * 0.2 - 12) * 0.2 + 4) * 0.2
    assert torch.allclose(I.image_blend(a, b, 1.0, "soft_light"), torch.full_like(a, 0.2 + 0.6 * (g - 0.2)))
    assert torch.allclose(I.image_blend(a, b, 0.5, "normal"), torch.full_like(a, 0.5))


def test_image_blur_spreads_a_point_symmetrically_and_keeps_its_mass():
    img = torch.zeros(1, 9, 9, 3)
    img[0, 4, 4] = 1
    out = I.image_blur(img, 2, 1.0)
    assert torch.allclose(out.sum(dim=(1, 2)), torch.ones(1, 3), atol=1e-5)
    assert torch.allclose(out[0, :, :, 0], out[0, :, :, 0].T, atol=1e-7)
    assert out[0, 4, 4, 0] < 1 and out[0, 4, 6, 0] > 0 and out[0, 4, 7, 0] == 0


def test_image_sharpen_increases_edge_contrast_and_leaves_flat_areas():
    img = torch.full((1, 6, 6, 3), 0.3)
    img[:, :, 3:] = 0.6
    out = I.image_sharpen(img, 1, 1.0, 0.1)
    assert out[0, 0, 2, 0] < 0.3 and out[0, 0, 3, 0] > 0.6
    assert torch.allclose(out[0, :, 0], img[0, :, 0])
    assert torch.allclose(I.image_sharpen(img, 1, 1.0, 0.0), img)


def test_canny_finds_a_thin_edge_at_a_step_and_nothing_on_flat_areas():
    img = torch.zeros(1, 16, 16, 3)
    img[:, :, 8:] = 1.0
    out = I.canny(img, 0.1, 0.2)
    assert out.shape == (1, 16, 16, 3) and set(out.unique().tolist()) <= {0.0, 1.0}
    cols = out[0, 8, :, 0].nonzero().flatten().tolist()
    assert cols and all(6 <= c <= 9 for c in cols) and len(cols) <= 2
    assert out[0, :, :4].sum() == 0 and out[0, :, 12:].sum() == 0
    assert I.canny(torch.full((1, 8, 8, 3), 0.5), 0.1, 0.2).sum() == 0


def test_canny_hysteresis_keeps_weak_edges_only_when_connected_to_strong_ones():
    img = torch.zeros(1, 24, 24, 3)
    img[:, :, 12:] = torch.linspace(0.05, 0.5, 24)[:, None, None]  # contrast grows down the edge
    strong_only = I.canny(img, 0.9, 0.9)[0, :, :, 0].sum()
    with_weak = I.canny(img, 0.1, 0.9)[0, :, :, 0].sum()
    assert with_weak > strong_only > 0
    two = torch.zeros(1, 16, 24, 3)
    two[:, :, 6:] = 0.2    # weak step at x=6, not touching the strong one
    two[:, :, 16:] = 0.8   # strong step at x=16
    edges = I.canny(two, 0.3, 0.9)[0, :, :, 0]
    assert edges[:, 3:10].sum() == 0 and edges[:, 14:19].sum() > 0


def test_empty_image_fills_the_color():
    out = I.empty_image(3, 2, 2, 0xFF8000)
    assert out.shape == (2, 2, 3, 3)
    assert torch.allclose(out[1, 1, 2], torch.tensor([1.0, 128 / 255, 0.0]))
