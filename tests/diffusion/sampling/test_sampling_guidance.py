"""CFG, conditioning areas/masks/strengths/timestep ranges, batching and model inputs (sampling.md §1.6, §6, §7)."""
import math

import pytest
import torch

from diffusion.sampling.guidance import (CFGDenoiser, ModelCall, apply_control_to_uncond,
                                         calc_cond_batch, match_areas,
                                         prepare_conds, prepare_denoise_mask, resize_to_batch_size,
                                         size_embedding)
from diffusion.sampling.ksampler import model_sampling_for, sample
from diffusion.sampling.parametrization import ModelSampling

from sampling_fakes import const_cond, fake_model

MS = ModelSampling.for_prediction("eps")


def prepared(model, conditioning, latent, prompt_type="positive", mask=None):
    return prepare_conds(conditioning, model_sampling=MS, family=model.family, latent=latent,
                         latent_format=model.latent_format,
                         concat_channels=model.config.get("in_channels") == 9,
                         denoise_mask=mask, prompt_type=prompt_type)


def eps_of(denoised, x, sigma):
    return (x - denoised) / sigma


def test_cfg_combines_negative_and_positive_in_one_batched_call_negative_first():
    model, unet = fake_model()
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    pos, neg = prepared(model, [const_cond(2.0)], x), prepared(model, [const_cond(-1.0)], x)
    den = CFGDenoiser(ModelCall(unet, MS), pos, neg, cfg=3.0)
    sigma = torch.tensor(2.0)
    d = den(x, sigma)
    assert len(unet.calls) == 1 and unet.calls[0]["x"].shape[0] == 2
    assert unet.calls[0]["context"][:, 0, 0].tolist() == [-1.0, 2.0]  # [negative, positive]
    assert torch.allclose(eps_of(d, x, sigma), torch.full_like(x, -1.0 + (2.0 + 1.0) * 3.0))


def test_cfg_of_one_never_evaluates_the_negative():
    model, unet = fake_model()
    x = torch.zeros(1, 4, 8, 8)
    pos, neg = prepared(model, [const_cond(2.0)], x), prepared(model, [const_cond(-1.0)], x)
    d = CFGDenoiser(ModelCall(unet, MS), pos, neg, cfg=1.0)(x, torch.tensor(1.0))
    assert len(unet.calls) == 1 and unet.calls[0]["x"].shape[0] == 1
    assert torch.allclose(d, torch.full_like(x, -2.0))


def test_cfg_pp_samplers_always_evaluate_the_negative_even_at_cfg_one():
    model, unet = fake_model()
    x = torch.zeros(1, 4, 8, 8)
    pos, neg = prepared(model, [const_cond(2.0)], x), prepared(model, [const_cond(-1.0)], x)
    d, u = CFGDenoiser(ModelCall(unet, MS), pos, neg, cfg=1.0, always_uncond=True).with_uncond(
        x, torch.tensor(1.0))
    assert unet.calls[0]["x"].shape[0] == 2
    assert torch.allclose(u, torch.full_like(x, 1.0))


def test_the_unet_sees_c_in_scaled_input_and_integer_timesteps():
    model, unet = fake_model()
    x = torch.ones(1, 4, 8, 8)
    pos = prepared(model, [const_cond(0.0)], x)
    CFGDenoiser(ModelCall(unet, MS), pos, [], cfg=1.0)(x, torch.tensor(0.5))
    call = unet.calls[0]
    assert torch.allclose(call["x"], x / math.sqrt(1.25))
    assert call["t"].tolist() == [169.0]


def test_several_full_entries_average_by_strength():
    model, unet = fake_model()
    x = torch.zeros(1, 4, 8, 8)
    pos = prepared(model, [const_cond(1.0, strength=1.0), const_cond(5.0, strength=3.0)], x)
    (d,) = calc_cond_batch(ModelCall(unet, MS), [pos], x, torch.tensor([1.0]))
    assert torch.allclose(eps_of(d, x, 1.0), torch.full_like(x, (1.0 + 15.0) / 4))


def test_an_area_entry_only_affects_its_region_with_feathered_inner_edges():
    model, unet = fake_model()
    x = torch.zeros(1, 4, 16, 16)
    # area (h, w, y, x) = right half; full-area entry with eps 0 underneath
    pos = prepared(model, [const_cond(0.0), const_cond(4.0, area=(16, 8, 0, 8))], x)
    (d,) = calc_cond_batch(ModelCall(unet, MS), [pos], x, torch.tensor([1.0]))
    eps = eps_of(d, x, 1.0)[0, 0]
    assert torch.all(eps[:, :8] == 0)
    # feather r = min(8, 8//4) = 2 on the inner (left) edge: weights 1/2, 1 then full
    assert torch.allclose(eps[:, 8], torch.full((16,), 4.0 * 0.5 / 1.5))
    assert torch.allclose(eps[:, 10:], torch.full((16, 6), 2.0))


def test_pixels_covered_by_no_entry_get_a_zero_prediction():
    model, unet = fake_model()
    x = torch.ones(1, 4, 8, 8)
    pos = prepared(model, [const_cond(3.0, area=(8, 4, 0, 0))], x)
    (d,) = calc_cond_batch(ModelCall(unet, MS), [pos], x, torch.tensor([1.0]))
    assert torch.all(d[..., 4:] == 0)


def test_a_mask_weights_an_entry_per_pixel():
    model, unet = fake_model()
    x = torch.zeros(1, 4, 8, 8)
    mask = torch.zeros(1, 8, 8)
    mask[:, :4] = 1.0
    pos = prepared(model, [const_cond(0.0), const_cond(6.0, mask=mask, mask_strength=1.0)], x)
    (d,) = calc_cond_batch(ModelCall(unet, MS), [pos], x, torch.tensor([1.0]))
    eps = eps_of(d, x, 1.0)[0, 0]
    assert torch.allclose(eps[:4], torch.full((4, 8), 3.0))
    assert torch.allclose(eps[4:], torch.zeros(4, 8))


def test_timestep_ranges_switch_entries_on_and_off_by_sigma():
    model, unet = fake_model()
    x = torch.zeros(1, 4, 8, 8)
    pos = prepared(model, [const_cond(1.0, start_percent=0.0, end_percent=0.5),
                           const_cond(9.0, start_percent=0.5, end_percent=1.0)], x)
    call = ModelCall(unet, MS)
    (early,) = calc_cond_batch(call, [pos], x, torch.tensor([10.0]))
    (late,) = calc_cond_batch(call, [pos], x, torch.tensor([0.3]))
    assert torch.allclose(eps_of(early, x, 10.0), torch.full_like(x, 1.0))
    assert torch.allclose(eps_of(late, x, 0.3), torch.full_like(x, 9.0), atol=1e-5)


def test_contexts_of_different_lengths_are_repeated_to_a_common_length_in_one_call():
    model, unet = fake_model()
    x = torch.zeros(1, 4, 8, 8)
    pos = prepared(model, [const_cond(1.0, tokens=154)], x)
    neg = prepared(model, [const_cond(2.0, tokens=77)], x)
    CFGDenoiser(ModelCall(unet, MS), pos, neg, cfg=2.0)(x, torch.tensor(1.0))
    assert len(unet.calls) == 1 and unet.calls[0]["context"].shape == (2, 154, 32)


def test_a_regional_positive_gets_a_matching_regional_negative():
    model, _ = fake_model()
    x = torch.zeros(1, 4, 16, 16)
    pos = prepared(model, [const_cond(1.0), const_cond(2.0, area=(8, 8, 0, 0), strength=0.5)], x)
    neg = prepared(model, [const_cond(-1.0)], x)
    match_areas(pos, neg)
    match_areas(neg, pos)
    assert len(neg) == 2 and neg[1].area == (8, 8, 0, 0) and neg[1].strength == 0.5
    assert float(neg[1].context[0, 0, 0]) == -1.0
    assert len(pos) == 2


def test_percentage_areas_and_mask_bounds_resolve_to_latent_units():
    model, _ = fake_model()
    x = torch.zeros(1, 4, 20, 40)
    (c,) = prepared(model, [const_cond(1.0, area=("percentage", 0.5, 0.25, 0.5, 0.5))], x)
    assert c.area == (10, 10, 10, 20)
    mask = torch.zeros(1, 20, 40)
    mask[0, 2:5, 30:39] = 1
    (m,) = prepared(model, [const_cond(1.0, mask=mask, set_area_to_bounds=True)], x)
    assert m.area == (8, 9, 2, 30)


def test_controlnet_hook_receives_the_scaled_input_and_its_residuals_reach_the_unet():
    seen = {}

    class Control:
        def get_control(self, x_in, t, sigma, context, y):
            seen.update(x=x_in, t=t, sigma=sigma, context=context)
            return {"input": [], "middle": [torch.ones(1)], "output": []}

    model, unet = fake_model()
    x = torch.ones(1, 4, 8, 8)
    pos = prepared(model, [const_cond(0.0, control=Control())], x)
    neg = prepared(model, [const_cond(0.0)], x)
    CFGDenoiser(ModelCall(unet, MS), pos, neg, cfg=2.0)(x, torch.tensor(0.5))
    assert len(unet.calls) == 2  # different ControlNet objects are never batched together
    assert torch.allclose(seen["x"], x / math.sqrt(1.25)) and seen["t"].tolist() == [169.0]
    assert [c["control"] is not None for c in unet.calls].count(True) == 1


def test_sdxl_adm_vector_is_pooled_text_plus_size_embeddings_cosine_first():
    e = size_embedding(1024)
    assert e[:3].tolist() == pytest.approx([0.98735362, -0.53761721, 0.68345720], abs=1e-5)
    assert e[128:131].tolist() == pytest.approx([-0.15853338, -0.84318900, 0.72999060], abs=1e-5)
    model, _ = fake_model("sdxl")
    x = torch.zeros(2, 4, 16, 12)
    pooled = torch.randn(1, 1280)
    (c,) = prepared(model, [[torch.zeros(1, 77, 32), {"pooled_output": pooled}]], x)
    assert c.y.shape == (2, 2816)
    assert torch.equal(c.y[0, :1280], pooled[0])
    assert torch.allclose(c.y[0, 1280:1536], size_embedding(128))   # height = 8 · 16
    assert torch.allclose(c.y[0, 1536:1792], size_embedding(96))    # width = 8 · 12
    model, _ = fake_model("sdxl_refiner")
    (r,) = prepared(model, [[torch.zeros(1, 77, 32), {"pooled_output": pooled}]], x, "negative")
    assert r.y.shape == (2, 2560) and torch.allclose(r.y[0, -256:], size_embedding(2.5))


def test_inpaint_models_get_mask_and_masked_latent_concatenated():
    model, unet = fake_model(in_channels=9)
    x = torch.zeros(1, 4, 8, 8)
    (plain,) = prepared(model, [const_cond(0.0)], x)
    assert plain.concat.shape == (1, 5, 8, 8)
    assert torch.all(plain.concat[:, 0] == 1)
    assert plain.concat[0, 1:, 0, 0].tolist() == pytest.approx([0.8223, -0.6876, 0.6364, 0.1380])
    image = torch.randn(1, 4, 8, 8)
    mask = torch.full((1, 64, 64), 0.7)
    (c,) = prepared(model, [const_cond(0.0, concat_latent_image=image, concat_mask=mask)], x)
    assert torch.all(c.concat[:, 0] == 1)  # rounded
    assert torch.allclose(c.concat[:, 1:], image * 0.18215)
    CFGDenoiser(ModelCall(unet, MS), [c], [], cfg=1.0)(x, torch.tensor(1.0))
    assert unet.calls[0]["x"].shape == (1, 9, 8, 8)


def test_denoise_mask_is_resized_bilinearly_and_repeated_to_channels_and_batch():
    m = prepare_denoise_mask(torch.ones(64, 64), torch.Size([3, 4, 8, 8]))
    assert m.shape == (3, 4, 8, 8) and torch.all(m == 1)


def test_resize_to_batch_size_follows_comfyuis_spread_rule():
    t = torch.arange(4).float()
    assert resize_to_batch_size(t, 2).tolist() == [0.0, 3.0]
    assert resize_to_batch_size(torch.arange(2).float(), 4).tolist() == [0.0, 0.0, 1.0, 1.0]
    assert resize_to_batch_size(t, 1).tolist() == [0.0]


def test_eps_of_zero_keeps_the_start_so_the_output_shows_the_spec_noise_recipe():
    model, unet = fake_model(out=lambda x, t, c: torch.zeros(x.shape[0], 4, *x.shape[2:]))
    ms = model_sampling_for(model)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(42))
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    full = torch.tensor([float(ms.schedule.sigma_max), 1.0, 0.0])
    out = sample(model, noise=noise, positive=[const_cond(0.0)], negative=[const_cond(0.0)],
                 latent=torch.zeros(1, 4, 8, 8), sigmas=full, sampler_name="euler", cfg=7.0)
    assert torch.allclose(out, noise * (1 + full[0] ** 2) ** 0.5 / 0.18215)
    partial = torch.tensor([2.0, 1.0, 0.0])
    out = sample(model, noise=noise, positive=[const_cond(0.0)], negative=[const_cond(0.0)],
                 latent=latent, sigmas=partial, sampler_name="euler", cfg=7.0)
    assert torch.allclose(out, (noise * 2.0 + latent * 0.18215) / 0.18215, atol=1e-5)


def test_legacy_controlnet_apply_also_steers_the_area_less_negative():
    model, _ = fake_model()
    x = torch.zeros(1, 4, 8, 8)
    control = object()
    pos = prepared(model, [const_cond(1.0, control=control, control_apply_to_uncond=True)], x)
    neg = prepared(model, [const_cond(0.0), const_cond(0.0, area=(4, 4, 0, 0))], x)
    apply_control_to_uncond(pos, neg)
    assert neg[0].control is control and neg[1].control is None
    plain = prepared(model, [const_cond(1.0, control=control)], x)
    neg2 = prepared(model, [const_cond(0.0)], x)
    apply_control_to_uncond(plain, neg2)
    assert neg2[0].control is None
