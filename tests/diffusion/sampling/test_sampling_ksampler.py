"""KSampler end to end on a micro random SD1 UNet: every sampler × scheduler, img2img, masks, stages."""
import pytest
import torch

from diffusion.sampling.ksampler import NonFiniteLatent, ksampler
from diffusion.sampling.samplers import SAMPLERS, UnsupportedSampler
from diffusion.sampling.schedules import SCHEDULER_NAMES

from sampling_fakes import fake_model, micro_model


@pytest.fixture(scope="module")
def model():
    return micro_model()


@pytest.fixture(scope="module")
def conds():
    gen = torch.Generator().manual_seed(5)
    return [[torch.randn(1, 77, 32, generator=gen), {}]], [[torch.randn(1, 77, 32, generator=gen), {}]]


def run(model, conds, **kw):
    args = dict(seed=3, steps=2, cfg=4.0, sampler_name="euler", scheduler="normal",
                positive=conds[0], negative=conds[1], latent={"samples": torch.zeros(1, 4, 8, 8)})
    args.update(kw)
    return ksampler(model, **args)


@pytest.mark.parametrize("sampler_name", list(SAMPLERS))
def test_every_sampler_with_every_scheduler_gives_finite_latents(model, conds, sampler_name):
    for scheduler in SCHEDULER_NAMES:
        out = run(model, conds, sampler_name=sampler_name, scheduler=scheduler)["samples"]
        assert out.shape == (1, 4, 8, 8)
        assert torch.isfinite(out).all(), scheduler
        assert out.abs().sum() > 0


def test_denoise_zero_returns_the_input_latent_unchanged(model, conds):
    latent = {"samples": torch.randn(1, 4, 8, 8), "batch_index": [0]}
    out = run(model, conds, latent=latent, denoise=0.0)
    assert out["samples"] is latent["samples"] and out["batch_index"] == [0]


def test_the_same_seed_gives_bit_identical_latents_across_runs(model, conds):
    for name in ("euler_ancestral", "dpmpp_2m_sde", "dpmpp_2m"):
        a = run(model, conds, sampler_name=name, seed=11)["samples"]
        b = run(model, conds, sampler_name=name, seed=11)["samples"]
        c = run(model, conds, sampler_name=name, seed=12)["samples"]
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_output_keeps_the_other_latent_keys(model, conds):
    mask = torch.ones(1, 64, 64)
    out = run(model, conds, latent={"samples": torch.zeros(1, 4, 8, 8), "noise_mask": mask})
    assert out["noise_mask"] is mask


def test_img2img_starts_from_the_input_and_stays_close_at_low_denoise(model, conds):
    latent = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))}
    low = run(model, conds, latent=latent, denoise=0.1, steps=3)["samples"]
    high = run(model, conds, latent=latent, denoise=1.0, steps=3)["samples"]
    assert (low - latent["samples"]).abs().mean() < (high - latent["samples"]).abs().mean()


def test_noise_mask_keeps_the_unmasked_region_of_the_original(model, conds):
    original = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    mask = torch.zeros(1, 64, 64)
    mask[:, :, :32] = 1.0  # repaint the left half
    for name in ("euler", "ddim", "dpmpp_2m_sde"):
        out = run(model, conds, sampler_name=name,
                  latent={"samples": original, "noise_mask": mask})["samples"]
        assert torch.allclose(out[..., 4:], original[..., 4:], atol=1e-4), name
        assert not torch.allclose(out[..., :4], original[..., :4], atol=1e-2), name


def test_two_stage_advanced_sampling_equals_one_full_run(model, conds):
    full = run(model, conds, steps=4, scheduler="karras")["samples"]
    first = run(model, conds, steps=4, scheduler="karras", last_step=2, start_step=0,
                force_full_denoise=False)
    second = run(model, conds, steps=4, scheduler="karras", latent=first, start_step=2,
                 last_step=10000, disable_noise=True, force_full_denoise=True)
    assert torch.allclose(second["samples"], full, atol=1e-4)


def test_start_step_past_the_end_returns_the_input(model, conds):
    latent = {"samples": torch.randn(1, 4, 8, 8)}
    out = run(model, conds, latent=latent, start_step=50, steps=4)
    assert out["samples"] is latent["samples"]


def test_batch_index_selects_per_element_noise(model, conds):
    latent = torch.zeros(2, 4, 8, 8)
    both = run(model, conds, latent={"samples": latent})["samples"]
    second = run(model, conds, latent={"samples": latent[:1], "batch_index": [1]})["samples"]
    assert torch.allclose(second[0], both[1], atol=1e-5)


def test_on_step_reports_every_step_with_the_total(model, conds):
    calls = []
    run(model, conds, steps=3, on_step=lambda i, total, x, d: calls.append((i, total)))
    assert calls == [(0, 3), (1, 3), (2, 3)]


def test_an_unknown_sampler_fails_naming_itself(model, conds):
    with pytest.raises(UnsupportedSampler, match="euler_turbo_9000"):
        run(model, conds, sampler_name="euler_turbo_9000")


def test_nan_from_the_model_is_a_clear_error():
    model, _ = fake_model(out=lambda x, t, c: torch.full((x.shape[0], 4, *x.shape[2:]), float("nan")))
    cond = [[torch.zeros(1, 77, 32), {}]]
    with pytest.raises(NonFiniteLatent, match="NaN"):
        ksampler(model, seed=0, steps=2, cfg=1.0, sampler_name="euler", scheduler="normal",
                 positive=cond, negative=cond, latent={"samples": torch.zeros(1, 4, 8, 8)})


def test_inpaint_unet_with_nine_channels_samples_finitely():
    model = micro_model(in_channels=9)
    gen = torch.Generator().manual_seed(1)
    cond = [[torch.randn(1, 77, 32, generator=gen), {}]]
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:48, 16:48] = 1
    out = ksampler(model, seed=0, steps=2, cfg=3.0, sampler_name="euler", scheduler="normal",
                   positive=cond, negative=cond,
                   latent={"samples": torch.randn(1, 4, 8, 8, generator=gen), "noise_mask": mask})
    assert torch.isfinite(out["samples"]).all()


def test_sdxl_model_receives_pooled_and_size_conditioning_and_samples_finitely():
    from diffusion import configs
    from diffusion.latent_formats import SDXL
    from diffusion.model_handle import ModelHandle
    from diffusion.models.unet import UNetModel

    config = {**configs.TINY_SDXL, "model_channels": 32, "channel_mult": [1], "num_res_blocks": [1],
              "transformer_depth": [1], "transformer_depth_middle": 1,
              "transformer_depth_output": [1, 1], "num_head_channels": 32, "adm_in_channels": 2816}
    unet = UNetModel(**config)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in unet.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    model = ModelHandle(unet.eval(), config, "sdxl", "eps", SDXL)
    pos = [[torch.randn(1, 77, 32, generator=gen),
            {"pooled_output": torch.randn(1, 1280, generator=gen), "width": 1024, "height": 1024}]]
    neg = [[torch.zeros(1, 77, 32), {"pooled_output": torch.zeros(1, 1280)}]]
    out = ksampler(model, seed=0, steps=2, cfg=5.0, sampler_name="dpmpp_2m", scheduler="karras",
                   positive=pos, negative=neg, latent={"samples": torch.zeros(1, 4, 8, 8)})
    assert torch.isfinite(out["samples"]).all()


def test_v_prediction_model_samples_finitely(conds):
    model = micro_model()
    v_model = model.clone()
    v_model.prediction = "v"
    eps_out = run(model, conds)["samples"]
    v_out = run(v_model, conds)["samples"]
    assert torch.isfinite(v_out).all() and not torch.equal(eps_out, v_out)
