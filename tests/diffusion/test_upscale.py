"""ESRGAN-family upscale models: both key layouts load, the scale is inferred, tiling is seamless."""

import torch

from diffusion.upscale import RRDBConfig, RRDBNet, load_upscaler, to_old_layout, upscale_image


def _random_old_layout(scale_ups: int, nb: int = 2, nf: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = RRDBNet(RRDBConfig(in_nc=3, out_nc=3, nf=nf, nb=nb, n_up=scale_ups))
    return {k: v.clone() for k, v in net.state_dict().items()}


def _to_new_layout(sd: dict[str, torch.Tensor], n_up: int) -> dict[str, torch.Tensor]:
    """The Real-ESRGAN (basicsr) spelling of an old-layout state dict, written independently."""
    nb = max(int(k.split(".")[3]) for k in sd if k.startswith("model.1.sub."))
    names = {"model.0.": "conv_first.", f"model.1.sub.{nb}.": "conv_body.",
             f"model.{3 * n_up + 2}.": "conv_hr.", f"model.{3 * n_up + 4}.": "conv_last."}
    names.update({f"model.{3 * k}.": f"conv_up{k}." for k in range(1, n_up + 1)})
    out = {}
    for key, value in sd.items():
        for old, new in names.items():
            if key.startswith(old):
                out[new + key[len(old):]] = value
                break
        else:
            _, _, _, n, rdb, conv, _, leaf = key.split(".")
            out[f"body.{n}.rdb{rdb[-1]}.{conv}.{leaf}"] = value
    return out


def test_old_layout_x4_model_upscales_by_four():
    net = load_upscaler(_random_old_layout(2))
    assert net.config.scale == 4
    image = torch.rand(1, 12, 10, 3)
    out = upscale_image(net, image)
    assert out.shape == (1, 48, 40, 3)
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_new_layout_x2_model_gives_the_same_pixels_as_its_old_layout_twin():
    old = _random_old_layout(1, seed=3)
    new = _to_new_layout(old, 1)
    assert "conv_first.weight" in new and "body.0.rdb1.conv1.weight" in new
    assert to_old_layout(new).keys() == old.keys()
    image = torch.rand(1, 9, 7, 3, generator=torch.Generator().manual_seed(1))
    a = upscale_image(load_upscaler(old), image)
    b = upscale_image(load_upscaler({"params_ema": new}), image)
    assert a.shape == (1, 18, 14, 3)
    assert torch.equal(a, b)


def test_one_times_model_keeps_the_size():
    net = load_upscaler(_random_old_layout(0))
    assert net.config.scale == 1
    assert upscale_image(net, torch.rand(2, 5, 6, 3)).shape == (2, 5, 6, 3)


def test_tiled_upscale_matches_whole_image_upscale_away_from_tile_seams():
    torch.manual_seed(0)
    net = RRDBNet(RRDBConfig(in_nc=3, out_nc=3, nf=4, nb=1, n_up=1)).eval()
    # a gentle net so values stay inside 0..1 and clamping doesn't hide differences
    for p in net.parameters():
        p.data.mul_(0.05)
    image = torch.rand(1, 40, 40, 3, generator=torch.Generator().manual_seed(2)) * 0.5 + 0.25
    whole = upscale_image(net, image, tile=64)
    tiled = upscale_image(net, image, tile=24, overlap=8)
    assert tiled.shape == whole.shape == (1, 80, 80, 3)
    # inside tiles the receptive field is complete; blended seams differ only slightly
    assert (tiled - whole).abs().mean() < 0.01


def test_tile_progress_is_reported_for_every_tile():
    net = load_upscaler(_random_old_layout(0, nb=1, nf=4))
    calls = []
    upscale_image(net, torch.rand(1, 40, 30, 3), tile=24, overlap=8, on_tile=lambda d, t: calls.append((d, t)))
    assert calls[-1][0] == calls[-1][1] == len(calls) > 1


def test_pixel_unshuffle_model_reports_its_real_scale_and_handles_odd_sizes():
    torch.manual_seed(0)
    net = RRDBNet(RRDBConfig(in_nc=12, out_nc=3, nf=4, nb=1, n_up=2, shuffle=2))
    loaded = load_upscaler(net.state_dict())
    assert loaded.config.shuffle == 2 and loaded.config.scale == 2
    assert upscale_image(loaded, torch.rand(1, 7, 9, 3)).shape == (1, 14, 18, 3)
