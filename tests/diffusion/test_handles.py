"""ModelHandle patching/cloning and VAEHandle pixel conventions, tiling and NaN fallback."""
from dataclasses import dataclass

import pytest
import torch

from diffusion import configs
from diffusion.latent_formats import SD15, SDXL, for_family
from diffusion.model_handle import ModelHandle
from diffusion.models.unet import UNetModel
from diffusion.models.vae import AutoencoderKL
from diffusion.vae_handle import VAEHandle, crop_to_multiple


def _seeded(module, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return module.eval()


@dataclass(frozen=True)
class AddConst:
    value: float

    def apply(self, weight, strength):
        return weight + strength * self.value


def _handle(dtype=torch.float32):
    unet = _seeded(UNetModel(**configs.TINY_SD1)).to(dtype)
    return ModelHandle(unet, configs.TINY_SD1, "sd1", "eps", SD15)


def _call(unet):
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        return unet(torch.randn(1, 4, 8, 8, generator=gen), torch.tensor([20.0]), torch.randn(1, 77, 32, generator=gen))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_patches_change_the_output_only_inside_active_and_weights_come_back_bit_identical(dtype):
    model = _handle(dtype)
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    with model.active("cpu", torch.float32) as unet:
        plain = _call(unet)
    patched = model.clone()
    key = "input_blocks.1.1.proj_in.weight"
    assert patched.add_patches({key: AddConst(0.37), "diffusion_model.out.2.bias": AddConst(1.0),
                                "not.a.weight": AddConst(1.0)}, 0.5) == {key, "diffusion_model.out.2.bias"}
    with patched.active("cpu", torch.float32) as unet:
        assert unet.input_blocks[1][1].proj_in.weight.dtype == torch.float32  # cast once for the whole use
        changed = _call(unet)
    assert model.unet.input_blocks[1][1].proj_in.weight.dtype == dtype
    assert not torch.allclose(plain, changed)
    for k, v in model.unet.state_dict().items():
        assert torch.equal(v, before[k]), k
    with model.active("cpu", torch.float32) as unet:
        assert torch.equal(_call(unet), plain)


def test_patches_of_one_key_apply_in_order_with_their_own_strength():
    seen = []

    @dataclass(frozen=True)
    class Record:
        tag: str

        def apply(self, weight, strength):
            seen.append((self.tag, strength))
            return weight * 2

    model = _handle()
    model.add_patches({"out.2.bias": Record("a")}, 0.25)
    model.add_patches({"out.2.bias": Record("b")}, -1.0)
    original = model.unet.out[2].bias.detach().clone()
    with model.active() as unet:
        assert torch.allclose(unet.out[2].bias, original * 4)
    assert seen == [("a", 0.25), ("b", -1.0)]


def test_clones_share_the_unet_but_not_their_patches_or_options():
    model = _handle()
    model.options["sampling"] = {}
    clone = model.clone()
    clone.add_patches({"out.2.bias": AddConst(1.0)}, 1.0)
    clone.options["sampling"]["zsnr"] = True
    assert clone.unet is model.unet and model.patches == {} and len(clone.patches) == 1
    assert model.options == {"sampling": {}}


def test_latent_formats_scale_and_preview_per_family():
    assert for_family("sd1") is SD15 and for_family("sd2") is SD15 and for_family("sdxl_refiner") is SDXL
    z = torch.ones(4, 2, 2)
    assert torch.equal(SDXL.process_out(SDXL.process_in(z)), z)
    assert SD15.process_in(z)[0, 0, 0].item() == pytest.approx(0.18215)
    rgb = SD15.latent_to_rgb(torch.tensor([1.0, 0, 0, 0]).reshape(4, 1, 1))
    assert rgb[0, 0].tolist() == pytest.approx([0.3512, 0.2297, 0.3227])
    assert SDXL.preview_bytes(torch.zeros(4, 1, 1))[0, 0].tolist() == [141, 125, 127]


def _vae():
    return VAEHandle(_seeded(AutoencoderKL(**configs.TINY_VAE), 4), SD15)


def test_vae_encode_crops_to_multiples_of_eight_around_the_centre():
    pixels = torch.rand(1, 21, 19, 3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(crop_to_multiple(pixels), pixels[:, 2:18, 1:17])
    vae = _vae()
    assert torch.equal(vae.encode(pixels), vae.encode(pixels[:, 2:18, 1:17]))


def test_vae_decode_gives_channels_last_pixels_in_zero_to_one():
    out = _vae().decode(torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(6)) * 5)
    assert out.shape == (2, 24, 40, 3) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1


def test_tiled_vae_matches_the_whole_image_where_tiles_do_not_overlap_edges():
    vae = _vae()
    z = torch.randn(1, 4, 12, 12, generator=torch.Generator().manual_seed(7))
    whole, tiles = vae.decode(z), vae.decode_tiled(z, tile_size=64, overlap=32)
    assert tiles.shape == whole.shape
    assert (tiles - whole).abs().mean() < 0.05
    pixels = torch.rand(1, 96, 96, 3, generator=torch.Generator().manual_seed(8))
    enc, enc_tiled = vae.encode(pixels), vae.encode_tiled(pixels, tile_size=64, overlap=32)
    assert enc_tiled.shape == enc.shape == (1, 4, 12, 12)
    assert (enc_tiled - enc).abs().mean() < 0.1 * enc.abs().mean()


def test_vae_decode_falls_back_to_fp32_when_low_precision_makes_nans():
    vae = _vae()
    vae.model.half()
    vae.dtype = torch.float16
    vae.model.decoder.conv_in.bias.data.fill_(60000.0)  # finite in fp16, but the next layers overflow
    out = vae.decode(torch.zeros(1, 4, 2, 2))
    assert vae.dtype == torch.float32 and torch.isfinite(out).all()
