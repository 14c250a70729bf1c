"""VAE nodes: a tiny real VAE for the round trip, and a recording VAE for the inpainting arithmetic."""

import pytest
import torch

from diffusion import configs
from diffusion.latent_formats import SD15
from diffusion.models.vae import AutoencoderKL
from diffusion.vae_handle import VAEHandle
from nodes import vae as V


class RecordingVAE:
    """Encodes by 8×8 average pooling (so values are checkable) and remembers its inputs."""

    def __init__(self):
        self.encoded = []

    def encode(self, pixels):
        self.encoded.append(pixels.clone())
        pooled = torch.nn.functional.avg_pool2d(pixels.movedim(-1, 1), 8)
        return torch.cat([pooled, pooled[:, :1]], dim=1)

    def decode(self, latents):
        return latents[:, :3].repeat_interleave(8, -1).repeat_interleave(8, -2).movedim(1, -1)

    def encode_tiled(self, pixels, tile_size, overlap):
        self.tiled = (tile_size, overlap)
        return self.encode(pixels)

    def decode_tiled(self, latents, tile_size, overlap):
        self.tiled = (tile_size, overlap)
        return self.decode(latents)


@pytest.fixture(scope="module")
def tiny_vae():
    vae = AutoencoderKL(**configs.TINY_VAE)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in vae.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return VAEHandle(vae.eval(), SD15)


def test_vae_encode_then_decode_with_a_real_tiny_vae_keeps_shapes_and_range(tiny_vae):
    pixels = torch.rand(2, 16, 24, 4, generator=torch.Generator().manual_seed(1))
    latent = V.vae_encode(pixels, tiny_vae)
    assert latent["samples"].shape == (2, 4, 2, 3)
    assert torch.equal(latent["samples"], tiny_vae.encode(pixels[..., :3]))
    image = V.vae_decode(latent, tiny_vae)
    assert image.shape == (2, 16, 24, 3) and image.min() >= 0 and image.max() <= 1


def test_vae_encode_drops_alpha_and_center_crops_to_multiples_of_eight():
    vae = RecordingVAE()
    pixels = torch.rand(1, 13, 19, 4, generator=torch.Generator().manual_seed(2))
    V.vae_encode(pixels, vae)
    assert torch.equal(vae.encoded[0], pixels[:, 2:10, 1:17, :3])


def test_vae_decode_flattens_video_batches():
    class Video(RecordingVAE):
        def decode(self, latents):
            return torch.zeros(2, 3, 8, 8, 3)
    assert V.vae_decode({"samples": torch.zeros(2, 4, 1, 1)}, Video()).shape == (6, 8, 8, 3)


def test_tiled_nodes_pass_pixel_tile_sizes_and_cap_the_overlap():
    vae = RecordingVAE()
    V.vae_decode_tiled({"samples": torch.zeros(1, 4, 2, 2)}, vae, 128, 64, 64, 8)
    assert vae.tiled == (128, 32)
    V.vae_encode_tiled(torch.zeros(1, 16, 16, 3), vae, 512, 64, 64, 8)
    assert vae.tiled == (512, 64)


def test_tiled_decode_of_a_real_vae_is_close_to_the_plain_decode(tiny_vae):
    latent = {"samples": torch.randn(1, 4, 12, 12, generator=torch.Generator().manual_seed(3)) * 0.5}
    plain = V.vae_decode(latent, tiny_vae)
    tiled = V.vae_decode_tiled(latent, tiny_vae, 64, 32, 64, 8)
    assert tiled.shape == plain.shape
    assert (tiled - plain).abs().mean() < 0.05


def test_vae_encode_for_inpaint_grays_the_masked_area_and_grows_the_noise_mask():
    vae = RecordingVAE()
    pixels = torch.zeros(1, 32, 32, 3)
    mask = torch.zeros(1, 16, 16)
    mask[:, 4:8, 4:8] = 1  # pixel rows/cols 8..15 after bilinear ×2 (edges fractional)
    out = V.vae_encode_for_inpaint(pixels, vae, mask, 6)
    filled = vae.encoded[0]
    hard = torch.nn.functional.interpolate(mask[:, None], size=(32, 32), mode="bilinear").round()[0, 0]
    assert torch.equal(filled[0, ..., 0] == 0.5, hard == 1)
    assert filled[0, ..., 0][hard == 0].eq(0).all()
    noise = out["noise_mask"]
    assert noise.shape == (1, 1, 32, 32) and set(noise.unique().tolist()) == {0.0, 1.0}
    rows = noise[0, 0].amax(1).nonzero().flatten()
    first, last = hard.amax(1).nonzero().flatten()[[0, -1]].tolist()
    # a 6×6 box with padding 3 covers rows i-3 … i+2: grows 2 rows up and 3 down (half-open)
    assert rows[0].item() == first - 2 and rows[-1].item() == last + 3


def test_vae_encode_for_inpaint_without_growth_uses_the_rounded_mask_and_crops():
    vae = RecordingVAE()
    out = V.vae_encode_for_inpaint(torch.zeros(1, 20, 20, 3), vae, torch.full((20, 20), 0.6), 0)
    assert out["noise_mask"].shape == (1, 1, 16, 16) and out["noise_mask"].eq(1).all()
    assert vae.encoded[0].shape == (1, 16, 16, 3) and vae.encoded[0].eq(0.5).all()


def test_inpaint_model_conditioning_attaches_gray_latent_and_mask_to_both_conditionings():
    vae = RecordingVAE()
    pixels = torch.ones(1, 16, 16, 3)
    mask = torch.zeros(1, 16, 16)
    mask[:, :, :8] = 0.7
    pos = [[torch.zeros(1, 2, 3), {"strength": 1.0}]]
    neg = [[torch.zeros(1, 2, 3), {}]]
    p, n, latent = V.inpaint_model_conditioning(pos, neg, vae, pixels, mask, True)
    concat = p[0][1]["concat_latent_image"]
    assert concat[0, 0, 0, 0] == 0.5 and concat[0, 0, 0, 1] == 1.0  # gray where round(mask) = 1
    assert torch.equal(latent["samples"][:, :3], torch.ones(1, 3, 2, 2))  # the original pixels
    assert torch.allclose(latent["noise_mask"][0, 0], mask[0])  # fractional, not rounded
    assert n[0][1]["concat_mask"] is p[0][1]["concat_mask"] and p[0][1]["strength"] == 1.0
    assert "concat_mask" not in pos[0][1]
    assert "noise_mask" not in V.inpaint_model_conditioning(pos, neg, vae, pixels, mask, False)[2]
