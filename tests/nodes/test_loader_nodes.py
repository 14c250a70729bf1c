"""Loader nodes read tiny model files written in the test from the configured model folders."""

import os

import pytest
import torch
from safetensors.torch import save_file

from diffusion import configs
from diffusion.keymaps.clip import to_checkpoint
from diffusion.models.text_encoders import build_encoder, random_weights, tiny_config
from diffusion.models.unet import UNetModel
from diffusion.models.vae import AutoencoderKL
from nodes import loaders as LD


def seeded(module, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1 + (1.0 if p.dim() == 1 and name.endswith("weight") else 0))
    return module.eval()


def clip_weights(family, encoder, width, seed):
    model = build_encoder(tiny_config(family, width=width, layers=2, encoder=encoder), dtype=torch.float32,
                          generator=torch.Generator().manual_seed(seed))
    return {k: v.contiguous() for k, v in random_weights(model, torch.Generator().manual_seed(seed)).items()}


def put(paths, folder, name, tensors):
    d = paths.folder_paths(folder)[0]
    os.makedirs(d, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(d, name))


@pytest.fixture(scope="module")
def unet():
    return seeded(UNetModel(**configs.TINY_SD1), 0)


@pytest.fixture(scope="module")
def vae():
    return seeded(AutoencoderKL(**configs.TINY_VAE), 1)


def checkpoint(unet, vae=None, clip=None):
    sd = {f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()}
    if vae is not None:
        sd.update({f"first_stage_model.{k}": v for k, v in vae.state_dict().items()})
    if clip is not None:
        sd.update(to_checkpoint({"clip_l": clip}, "sd1"))
    return sd


def test_checkpoint_loader_returns_model_clip_and_vae_of_the_file(ctx, paths, unet, vae):
    clip = clip_weights("sd1", "clip_l", 32, 2)
    put(paths, "checkpoints", "tiny.safetensors", checkpoint(unet, vae, clip))
    model, clip_handle, vae_handle = LD.checkpoint_loader_simple(ctx, "tiny.safetensors")
    assert model.family == "sd1"
    with model.active("cpu", torch.float32) as m:
        assert torch.equal(m.state_dict()["out.2.weight"].float(), unet.state_dict()["out.2.weight"])
    cond, _ = clip_handle.encode("a cat")
    assert cond.shape == (1, 77, 32)
    pixels = vae_handle.decode(torch.zeros(1, 4, 2, 2))
    assert pixels.shape == (1, 16, 16, 3)


def test_checkpoint_without_text_encoder_gives_no_clip(ctx, paths, unet, vae):
    put(paths, "checkpoints", "noclip.safetensors", checkpoint(unet, vae))
    assert LD.checkpoint_loader_simple(ctx, "noclip.safetensors")[1] is None


def test_unknown_checkpoint_name_is_a_file_not_found_error_naming_the_folder(ctx):
    with pytest.raises(FileNotFoundError, match="checkpoints"):
        LD.checkpoint_loader_simple(ctx, "../../etc/passwd")


def test_file_lists_refresh_without_a_restart(paths):
    combo = dict(LD.checkpoint_loader_simple.spec.inputs)["ckpt_name"]
    before = combo.resolve(paths)
    put(paths, "checkpoints", "zz_new.safetensors", {"x": torch.zeros(1)})
    assert combo.resolve(paths) == sorted(before + ["zz_new.safetensors"])


def test_vae_loader_decodes_like_the_file_weights(ctx, paths, vae):
    put(paths, "vae", "tiny_vae.safetensors", vae.state_dict())
    handle = LD.vae_loader(ctx, "tiny_vae.safetensors")
    latent = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = ((vae.decode(latent) + 1) / 2).clamp(0, 1).movedim(1, -1)
    assert torch.allclose(handle.decode(latent), expected, atol=1e-5)


def test_clip_loader_reads_a_standalone_clip_l_file(ctx, paths):
    weights = clip_weights("sd1", "clip_l", 32, 4)
    put(paths, "text_encoders", "clip_l.safetensors", weights)
    clip = LD.clip_loader(ctx, "clip_l.safetensors", "stable_diffusion", "cpu")
    direct = build_encoder(tiny_config("sd1", width=32, layers=2, encoder="clip_l"), weights, torch.float32)
    from diffusion.clip_handle import ClipHandle
    expected = ClipHandle({"clip_l": direct}, "sd1").encode("a dog")[0]
    assert torch.allclose(clip.encode("a dog")[0], expected, atol=1e-2)  # stored fp16 like ComfyUI


def test_dual_clip_loader_builds_sdxl_clip_in_either_file_order(ctx, paths):
    put(paths, "text_encoders", "l.safetensors", clip_weights("sdxl", "clip_l", 32, 5))
    put(paths, "text_encoders", "g.safetensors", clip_weights("sdxl", "clip_g", 64, 6))
    a = LD.dual_clip_loader(ctx, "l.safetensors", "g.safetensors", "sdxl")
    b = LD.dual_clip_loader(ctx, "g.safetensors", "l.safetensors", "sdxl", "cpu")
    cond_a, pooled_a = a.encode_sdxl("a tree", "green")
    assert cond_a.shape == (1, 77, 96) and pooled_a is not None
    assert torch.equal(cond_a, b.encode_sdxl("a tree", "green")[0])


def test_unet_loader_reads_a_bare_diffusion_model_and_warns_about_fp8(ctx, paths, unet):
    put(paths, "diffusion_models", "bare.safetensors", unet.state_dict())
    model = LD.unet_loader(ctx, "bare.safetensors", "default")
    with model.active("cpu", torch.float32) as m:
        assert torch.equal(m.state_dict()["input_blocks.0.0.weight"].float(), unet.state_dict()["input_blocks.0.0.weight"])
    assert not ctx.warnings
    LD.unet_loader(ctx, "bare.safetensors", "fp8_e4m3fn")
    assert "fp8_e4m3fn" in ctx.warnings[0]
