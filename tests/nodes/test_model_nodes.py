"""Merge nodes blend weights as their formulas say; CheckpointSave round-trips exactly through the loader."""

import json
import os

import pytest
import torch
from safetensors import safe_open

from diffusion import configs
from diffusion.clip_handle import ClipHandle
from diffusion.latent_formats import for_family
from diffusion.model_handle import ModelHandle
from diffusion.models.text_encoders import build_encoder, tiny_config
from diffusion.models.unet import UNetModel
from diffusion.models.vae import AutoencoderKL
from diffusion.patches import Diff
from diffusion.vae_handle import VAEHandle
from nodes import loaders as LD
from nodes import models as M

KEY = "input_blocks.1.1.proj_in.weight"


def seeded_model(seed):
    torch.manual_seed(seed)
    unet = UNetModel(**configs.TINY_SD1).eval().requires_grad_(False)
    return ModelHandle(unet, configs.TINY_SD1, "sd1", "eps", for_family("sd1"))


def seeded_clip(seed):
    enc = build_encoder(tiny_config("sd1", width=32, layers=2, encoder="clip_l"), dtype=torch.float32,
                        generator=torch.Generator().manual_seed(seed))
    return ClipHandle({"clip_l": enc}, "sd1")


def param(module, key):
    return dict(module.named_parameters())[key].detach().clone()


@pytest.fixture(scope="module")
def pair():
    return seeded_model(0), seeded_model(1)


def test_merge_simple_blends_by_ratio(pair):
    a, b = pair
    merged = M.model_merge_simple(a, b, 0.25)
    with merged.active() as unet:
        got = param(unet, KEY)
    assert torch.allclose(got, 0.75 * param(a.unet, KEY) + 0.25 * param(b.unet, KEY), atol=1e-6)
    assert torch.equal(param(a.unet, KEY), dict(a.unet.named_parameters())[KEY])  # a itself untouched


def test_merge_ratio_one_gives_the_second_model(pair):
    a, b = pair
    wb = param(b.unet, "out.2.weight")
    with M.model_merge_simple(a, b, 1.0).active() as unet:
        assert torch.allclose(param(unet, "out.2.weight"), wb)


def test_merge_add_and_subtract_follow_their_formulas(pair):
    a, b = pair
    wa, wb = param(a.unet, KEY), param(b.unet, KEY)  # read before use: active() patches the shared UNet
    with M.model_merge_add(a, b).active() as unet:
        assert torch.allclose(param(unet, KEY), wa + wb, atol=1e-6)
    with M.model_merge_subtract(a, b, 0.5).active() as unet:
        assert torch.allclose(param(unet, KEY), wa - 0.5 * wb, atol=1e-6)


def test_merge_sees_the_second_models_own_patches(pair):
    a, b = pair
    patched_b = b.clone()
    patched_b.add_patches({KEY: Diff(torch.ones_like(param(b.unet, KEY)))}, 1.0)
    wb = param(b.unet, KEY)
    with M.model_merge_simple(a, patched_b, 1.0).active() as unet:
        assert torch.allclose(param(unet, KEY), wb + 1.0, atol=1e-6)


def test_clip_merge_blends_encoder_weights_but_not_position_ids():
    c1, c2 = seeded_clip(1), seeded_clip(2)
    merged = M.clip_merge_simple(c1, c2, 0.5)
    e1, e2 = c1.encoders["clip_l"].hf_state_dict(), c2.encoders["clip_l"].hf_state_dict()
    key = "text_model.encoder.layers.0.mlp.fc1.weight"
    saved = merged.checkpoint_state_dict()
    got = saved[f"cond_stage_model.transformer.{key}"]
    assert torch.allclose(got.float(), (0.5 * e1[key] + 0.5 * e2[key]).float(), atol=1e-3)
    assert not any("position_ids" in k for k in merged.patches)


def test_checkpoint_save_round_trips_exactly_through_checkpoint_loader(ctx, paths):
    model = seeded_model(3)
    model.add_patches({KEY: Diff(torch.full_like(param(model.unet, KEY), 0.5))}, 1.0)
    clip = seeded_clip(4)
    torch.manual_seed(5)
    vae = VAEHandle(AutoencoderKL(**configs.TINY_VAE).eval(), for_family("sd1"))
    M.checkpoint_save(ctx, model, clip, vae, "checkpoints/roundtrip", {"1": {"class_type": "X", "inputs": {}}},
                      {"workflow": {"nodes": []}})
    path = os.path.join(paths.output_dir, "checkpoints", "roundtrip_00001_.safetensors")
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["prompt"])["1"]["class_type"] == "X" and json.loads(meta["workflow"]) == {"nodes": []}
    os.makedirs(paths.folder_paths("checkpoints")[0], exist_ok=True)
    os.replace(path, os.path.join(paths.folder_paths("checkpoints")[0], "roundtrip.safetensors"))
    model2, clip2, vae2 = LD.checkpoint_loader_simple(ctx, "roundtrip.safetensors")
    with model.active() as unet:
        expected = {k: v.clone() for k, v in unet.state_dict().items()}
    with model2.active(dtype=torch.float32) as unet2:
        for k, v in unet2.state_dict().items():
            assert torch.equal(v.float(), expected[k].float()), k
    for k, v in vae.model.state_dict().items():
        assert torch.equal(vae2.model.state_dict()[k].float(), v.float()), k
    cond, _ = clip.encode("a square")
    cond2, _ = clip2.encode("a square")
    assert torch.allclose(cond, cond2, atol=1e-2)  # text encoders are stored fp16, as ComfyUI does
