"""ControlNet nodes: zero convs give exactly the plain result, strength and percent range are honoured."""

import os

import pytest
import torch
from safetensors.torch import save_file

from diffusion import configs
from diffusion.latent_formats import for_family
from diffusion.model_handle import ModelHandle
from diffusion.models.controlnet import ControlNet
from diffusion.models.unet import UNetModel
from diffusion.sampling.ksampler import ksampler
from nodes import controlnet as CN


def seeded(module, seed, scale=0.1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale + (1.0 if name.endswith("weight") and p.dim() == 1 else 0))
    return module.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def model():
    unet = seeded(UNetModel(**configs.TINY_SD1), 0)
    return ModelHandle(unet, configs.TINY_SD1, "sd1", "eps", for_family("sd1"))


def write_controlnet(paths, name, zero_convs_zero: bool):
    net = seeded(ControlNet(hint_channels=3, **configs.TINY_SD1), 2, scale=0.3)
    sd = {f"control_model.{k}": v.clone() for k, v in net.state_dict().items()}
    if zero_convs_zero:
        for k in sd:
            if ".zero_convs." in k or "middle_block_out" in k:
                sd[k].zero_()
    folder = paths.folder_paths("controlnet")[0]
    os.makedirs(folder, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(folder, name))
    return name


def conds():
    gen = torch.Generator().manual_seed(7)
    return ([[torch.randn(1, 77, 32, generator=gen), {"pooled_output": None}]],
            [[torch.randn(1, 77, 32, generator=gen), {"pooled_output": None}]])


def run(model, positive, negative, steps=3):
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    return ksampler(model, seed=1, steps=steps, cfg=4.0, sampler_name="euler", scheduler="normal",
                    positive=positive, negative=negative, latent=latent)["samples"]


HINT = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(3))


def test_zero_initialised_zero_convs_give_exactly_the_result_without_controlnet(ctx, paths, model):
    cn = CN.controlnet_loader(ctx, write_controlnet(paths, "zero.safetensors", True))
    pos, neg = conds()
    plain = run(model, pos, neg)
    p2, n2 = CN.controlnet_apply_advanced(pos, neg, cn, HINT, 1.0, 0.0, 1.0)
    assert torch.equal(run(model, p2, n2), plain)


def test_a_trained_controlnet_changes_the_result_and_strength_zero_equals_none(ctx, paths, model):
    cn = CN.controlnet_loader(ctx, write_controlnet(paths, "cn.safetensors", False))
    pos, neg = conds()
    plain = run(model, pos, neg)
    assert CN.controlnet_apply_advanced(pos, neg, cn, HINT, 0.0, 0.0, 1.0) == (pos, neg)
    p2, n2 = CN.controlnet_apply_advanced(pos, neg, cn, HINT, 1.0, 0.0, 1.0)
    before = {k: v.clone() for k, v in cn.model.state_dict().items()}
    old_dtype, cn.compute_dtype = cn.compute_dtype, torch.bfloat16  # cast once for the run, then put back
    controlled = run(model, p2, n2)
    cn.compute_dtype = old_dtype
    assert all(torch.equal(v, before[k]) and v.dtype == before[k].dtype for k, v in cn.model.state_dict().items())
    assert not torch.allclose(controlled, plain, atol=1e-4)
    assert p2[0][1]["control"] is n2[0][1]["control"]  # shared by positive and negative


def test_percent_range_outside_the_schedule_contributes_nothing(ctx, paths, model):
    cn = CN.controlnet_loader(ctx, write_controlnet(paths, "cn.safetensors", False))
    pos, neg = conds()
    plain = run(model, pos, neg)
    # a 3-step "normal" run evaluates the model at sigma 14.6, 1.62 and 0.03: the window from 60% to
    # 80% of the schedule (sigma 1.16 down to 0.57) contains none of them
    p_gap, n_gap = CN.controlnet_apply_advanced(pos, neg, cn, HINT, 1.0, 0.6, 0.8)
    assert torch.equal(run(model, p_gap, n_gap), plain)
    p_early, n_early = CN.controlnet_apply_advanced(pos, neg, cn, HINT, 1.0, 0.0, 0.5)
    assert not torch.allclose(run(model, p_early, n_early), plain, atol=1e-4)


def test_chained_controlnets_sum_their_residuals(ctx, paths, model):
    cn = CN.controlnet_loader(ctx, write_controlnet(paths, "cn.safetensors", False))
    pos, neg = conds()
    p1, n1 = CN.controlnet_apply_advanced(pos, neg, cn, HINT, 0.5, 0.0, 1.0)
    p2, n2 = CN.controlnet_apply_advanced(p1, n1, cn, HINT, 0.5, 0.0, 1.0)
    assert p2[0][1]["control"].previous is p1[0][1]["control"]
    single_p, single_n = CN.controlnet_apply_advanced(pos, neg, cn, HINT, 1.0, 0.0, 1.0)
    assert torch.allclose(run(model, p2, n2), run(model, single_p, single_n), atol=1e-4)


def test_old_apply_node_marks_the_control_for_the_negative_prompt(ctx, paths, model):
    cn = CN.controlnet_loader(ctx, write_controlnet(paths, "cn.safetensors", False))
    pos, neg = conds()
    out = CN.controlnet_apply(pos, cn, HINT, 1.0)
    assert out[0][1]["control_apply_to_uncond"] is True
    assert torch.isfinite(run(model, out, neg)).all()


def test_a_file_that_is_not_a_controlnet_is_refused_with_a_clear_error(ctx, paths):
    folder = paths.folder_paths("controlnet")[0]
    os.makedirs(folder, exist_ok=True)
    save_file({"foo.weight": torch.zeros(2)}, os.path.join(folder, "junk.safetensors"))
    with pytest.raises(RuntimeError, match="junk.safetensors is not a ControlNet"):
        CN.controlnet_loader(ctx, "junk.safetensors")
