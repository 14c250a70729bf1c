"""Sampling nodes: KSampler(Advanced), custom sampling pieces, progress/preview, interrupt, errors."""
import dataclasses

import pytest
import torch
from PIL import Image

from diffusion import configs
from diffusion.latent_formats import SD15
from diffusion.model_handle import ModelHandle
from diffusion.models.unet import UNetModel
from engine.errors import Interrupted
from nodes.sampling import (basic_scheduler, k_sampler, k_sampler_advanced, k_sampler_select,
                            sampler_custom, sd_turbo_scheduler)

MICRO = {**configs.TINY_SD1, "channel_mult": [1], "num_res_blocks": [1], "transformer_depth": [1],
         "transformer_depth_output": [1, 1]}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convolutions are faster single-threaded on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    unet = UNetModel(**MICRO)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in unet.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return ModelHandle(unet.eval(), MICRO, "sd1", "eps", SD15)


@pytest.fixture(scope="module")
def conds():
    gen = torch.Generator().manual_seed(1)
    return [[torch.randn(1, 77, 32, generator=gen), {}]], [[torch.randn(1, 77, 32, generator=gen), {}]]


def empty():
    return {"samples": torch.zeros(1, 4, 8, 8)}


def ksampler_node(model, conds, ctx, **kw):
    args = dict(model=model, seed=5, steps=3, cfg=5.0, sampler_name="euler", scheduler="karras",
                positive=conds[0], negative=conds[1], latent_image=empty(), denoise=1.0, ctx=ctx)
    args.update(kw)
    return k_sampler(**args)


def test_ksampler_reports_progress_for_every_step(model, conds, ctx):
    out = ksampler_node(model, conds, ctx)
    assert torch.isfinite(out["samples"]).all()
    assert ctx.progress_calls == [(1, 3), (2, 3), (3, 3)]


def test_latent2rgb_previews_are_sent_as_jpeg_images_when_enabled(model, conds, ctx):
    previews = []
    ctx.config = dataclasses.replace(ctx.config, preview_method="latent2rgb")
    ctx.progress = lambda value, total, preview=None: previews.append(preview)
    ksampler_node(model, conds, ctx, steps=2)
    assert len(previews) == 2
    fmt, image, size = previews[0]
    assert fmt == "JPEG" and isinstance(image, Image.Image) and image.size == (512, 512)


def test_no_preview_is_made_when_the_preview_method_is_none(model, conds, ctx):
    previews = []
    ctx.progress = lambda value, total, preview=None: previews.append(preview)
    ksampler_node(model, conds, ctx, steps=2)
    assert previews == [None, None]


def test_interrupt_stops_sampling_at_the_next_step(model, conds, ctx):
    seen = []

    def progress(value, total, preview=None):
        seen.append(value)
        raise Interrupted("Processing interrupted")

    ctx.progress = progress
    with pytest.raises(Interrupted):
        ksampler_node(model, conds, ctx, steps=5)
    assert seen == [1]


def test_nan_latents_raise_an_error_naming_the_node(conds, ctx):
    unet = UNetModel(**MICRO)
    with torch.no_grad():
        for p in unet.parameters():
            p.fill_(float("nan"))
    broken = ModelHandle(unet.eval(), MICRO, "sd1", "eps", SD15)
    with pytest.raises(RuntimeError, match=r"KSampler \(node 1\).*NaN"):
        ksampler_node(broken, conds, ctx, steps=1)


def test_advanced_two_stages_match_a_single_ksampler_run(model, conds, ctx):
    common = dict(model=model, noise_seed=5, steps=4, cfg=5.0, sampler_name="euler",
                  scheduler="karras", positive=conds[0], negative=conds[1], ctx=ctx)
    first = k_sampler_advanced(add_noise="enable", latent_image=empty(), start_at_step=0,
                               end_at_step=2, return_with_leftover_noise="enable", **common)
    second = k_sampler_advanced(add_noise="disable", latent_image=first, start_at_step=2,
                                end_at_step=10000, return_with_leftover_noise="disable", **common)
    single = ksampler_node(model, conds, ctx, steps=4)
    assert torch.allclose(second["samples"], single["samples"], atol=1e-4)


def test_basic_scheduler_gives_the_spec_sigmas_and_empty_for_zero_denoise(model):
    sig = basic_scheduler(model=model, scheduler="karras", steps=10, denoise=1.0)
    assert sig.tolist()[:3] == pytest.approx([14.614643, 9.102929, 5.478392], abs=1e-5)
    assert len(basic_scheduler(model=model, scheduler="normal", steps=10, denoise=0.0)) == 0
    assert len(basic_scheduler(model=model, scheduler="normal", steps=10, denoise=0.5)) == 11


def test_sd_turbo_scheduler_counts_down_from_timestep_999(model):
    sig = sd_turbo_scheduler(model=model, steps=1, denoise=1.0)
    assert sig.tolist() == pytest.approx([14.614641, 0.0], abs=1e-5)


def test_sampler_custom_with_select_and_basic_scheduler_matches_ksampler(model, conds, ctx):
    sigmas = basic_scheduler(model=model, scheduler="karras", steps=3, denoise=1.0)
    out, denoised = sampler_custom(model=model, add_noise=True, noise_seed=5, cfg=5.0,
                                   positive=conds[0], negative=conds[1],
                                   sampler=k_sampler_select(sampler_name="euler"), sigmas=sigmas,
                                   latent_image=empty(), ctx=ctx)
    single = ksampler_node(model, conds, ctx, steps=3)
    assert torch.equal(out["samples"], single["samples"])
    assert torch.isfinite(denoised["samples"]).all()
