"""The LDM UNet and VAE: key layout against real checkpoints, shapes, and behaviour on tiny configs."""
import pytest
import torch

from diffusion import configs
from diffusion.models.unet import UNetModel, timestep_embedding
from diffusion.models.vae import AutoencoderKL
from tests.diffusion.keylists import read_keys, section


def _seeded(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return module.eval()


@pytest.mark.parametrize("name,config", [("sd15", configs.SD15), ("sd15_inpaint", configs.SD15_INPAINT),
                                         ("sd21_768v", configs.SD20), ("sdxl_base", configs.SDXL)])
def test_full_size_unet_and_vae_have_exactly_the_checkpoint_keys_and_shapes(name, config):
    keys = read_keys(name)
    with torch.device("meta"):
        unet, vae = UNetModel(**config), AutoencoderKL(**configs.VAE)
    assert {k: list(v.shape) for k, v in unet.state_dict().items()} == section(keys, "model.diffusion_model.")
    assert {k: list(v.shape) for k, v in vae.state_dict().items()} == section(keys, "first_stage_model.")


def test_timestep_embedding_puts_cosines_first():
    emb = timestep_embedding(torch.tensor([0.0, 10.0]), 8)
    assert emb.shape == (2, 8)
    assert torch.equal(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    assert emb[1, 0] == pytest.approx(torch.cos(torch.tensor(10.0)).item())


@pytest.mark.parametrize("config", [configs.TINY_SD1, configs.TINY_SD2])
def test_tiny_unet_predicts_a_latent_shaped_output_that_depends_on_the_text(config):
    unet = _seeded(UNetModel(**config))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 16, 16, generator=gen)
    ctx_a, ctx_b = torch.randn(2, 2, 77, 32, generator=gen)
    with torch.no_grad():
        a, b = unet(x, torch.tensor([10.0, 500.0]), ctx_a), unet(x, torch.tensor([10.0, 500.0]), ctx_b)
    assert a.shape == (2, 4, 16, 16) and torch.isfinite(a).all()
    assert not torch.allclose(a, b)


def test_tiny_unet_handles_latents_whose_size_is_not_a_multiple_of_the_downsampling():
    unet = _seeded(UNetModel(**configs.TINY_SD1))
    with torch.no_grad():
        out = unet(torch.zeros(1, 4, 13, 11), torch.tensor([3.0]), torch.zeros(1, 77, 32))
    assert out.shape == (1, 4, 13, 11)


def test_sdxl_unet_needs_and_uses_the_adm_vector():
    unet = _seeded(UNetModel(**configs.TINY_SDXL))
    x, ctx = torch.zeros(1, 4, 8, 8), torch.zeros(1, 77, 32)
    with torch.no_grad(), pytest.raises(ValueError, match="ADM"):
        unet(x, torch.tensor([1.0]), ctx)
    with torch.no_grad():
        a = unet(x, torch.tensor([1.0]), ctx, y=torch.zeros(1, 48))
        b = unet(x, torch.tensor([1.0]), ctx, y=torch.ones(1, 48))
    assert not torch.allclose(a, b)


def test_control_residuals_are_added_to_the_matching_skip_and_middle():
    unet = _seeded(UNetModel(**configs.TINY_SD1))
    x, t, ctx = torch.zeros(1, 4, 8, 8), torch.tensor([5.0]), torch.zeros(1, 77, 32)
    with torch.no_grad():
        base = unet(x, t, ctx)
        nothing = unet(x, t, ctx, control={"output": [None] * 6, "middle": [None]})
        zero = unet(x, t, ctx, control={"output": [torch.zeros(1, 32, 8, 8)], "middle": [torch.zeros(1, 64, 4, 4)]})
        mid = unet(x, t, ctx, control={"middle": [torch.ones(1, 64, 4, 4)]})
        skip = unet(x, t, ctx, control={"output": [torch.ones(1, 32, 8, 8)]})
    assert torch.equal(base, nothing) and torch.equal(base, zero)
    assert not torch.allclose(base, mid) and not torch.allclose(base, skip) and not torch.allclose(mid, skip)


def test_unet_stored_in_fp16_computes_in_the_requested_dtype_without_converting_its_weights():
    unet = _seeded(UNetModel(**configs.TINY_SD1))
    x, t, ctx = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2)), torch.tensor([7.0]), torch.zeros(1, 77, 32)
    with torch.no_grad():
        ref = unet(x, t, ctx)
        unet.half()
        unet.compute_dtype = torch.float32
        out = unet(x, t, ctx)
    assert out.dtype == torch.float32
    assert all(p.dtype == torch.float16 for p in unet.parameters())
    assert torch.allclose(out, ref, atol=2e-2)


def test_vae_round_trip_shapes_follow_the_factor_of_eight():
    vae = _seeded(AutoencoderKL(**configs.TINY_VAE))
    with torch.no_grad():
        z = vae.encode(torch.zeros(2, 3, 64, 48))
        y = vae.decode(z)
    assert z.shape == (2, 4, 8, 6) and y.shape == (2, 3, 64, 48)


def test_full_size_controlnet_has_exactly_the_v11_canny_keys_and_shapes():
    from diffusion.models.controlnet import ControlNet

    keys = read_keys("controlnet_v11p_sd15_canny")
    with torch.device("meta"):
        cn = ControlNet(hint_channels=3, **configs.SD15)
    assert {k: list(v.shape) for k, v in cn.state_dict().items()} == section(keys, "control_model.")
