"""Diffusers-layout UNet/VAE/ControlNet files convert to exactly Kiln's LDM module keys and shapes.

The key lists were written from tiny diffusers models by tests/fixtures/keys/make_diffusers_lists.py,
which also checked that the converted weights compute the same outputs as diffusers (max error < 1e-4).
"""
import pytest
import torch
from safetensors.torch import save_file

from diffusion import configs, loading
from diffusion.devices import RuntimeOptions
from diffusion.keymaps.controlnet import diffusers_controlnet_to_ldm, t2i_adapter_to_ldm
from diffusion.keymaps.unet import diffusers_unet_to_ldm, is_diffusers_unet
from diffusion.keymaps.vae import diffusers_vae_to_ldm, is_diffusers_vae
from diffusion.models.controlnet import ControlNet
from diffusion.models.unet import UNetModel
from diffusion.models.vae import AutoencoderKL
from tests.diffusion.keylists import read_keys


def _tensors(name):
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(shape, generator=gen) * 0.1 for k, (shape, _) in read_keys(name).items()}


def _shapes(sd):
    return {k: list(v.shape) for k, v in sd.items()}


@pytest.mark.parametrize("name,config", [("diffusers_unet_tiny_sd1", configs.TINY_SD1),
                                         ("diffusers_unet_tiny_sdxl", configs.TINY_SDXL)])
def test_diffusers_unet_keys_map_onto_the_ldm_unet(name, config):
    sd = _tensors(name)
    assert is_diffusers_unet(sd)
    assert _shapes(diffusers_unet_to_ldm(sd)) == _shapes(UNetModel(**config).state_dict())


def test_diffusers_vae_keys_map_onto_the_ldm_vae_with_conv_shaped_attention():
    sd = _tensors("diffusers_vae_tiny")
    assert is_diffusers_vae(sd)
    converted = diffusers_vae_to_ldm(sd)
    assert _shapes(converted) == _shapes(AutoencoderKL(**configs.TINY_VAE).state_dict())
    assert converted["decoder.mid.attn_1.q.weight"].shape == (32, 32, 1, 1)


def test_diffusers_controlnet_keys_map_onto_the_original_controlnet():
    converted = diffusers_controlnet_to_ldm(_tensors("diffusers_controlnet_tiny_sd1"))
    assert _shapes(converted) == _shapes(ControlNet(hint_channels=3, **configs.TINY_SD1).state_dict())


def test_diffusers_files_load_through_the_ordinary_loaders(tmp_path):
    fp32 = RuntimeOptions(force_fp32=True)
    for name in ("diffusers_unet_tiny_sd1", "diffusers_vae_tiny", "diffusers_controlnet_tiny_sd1"):
        save_file(_tensors(name), str(tmp_path / f"{name}.safetensors"))
    assert loading.load_unet(tmp_path / "diffusers_unet_tiny_sd1.safetensors", config=fp32).family == "sd1"
    vae = loading.load_vae(tmp_path / "diffusers_vae_tiny.safetensors", config=fp32)
    assert vae.decode(torch.zeros(1, 4, 2, 2)).shape == (1, 16, 16, 3)
    control = loading.load_controlnet(tmp_path / "diffusers_controlnet_tiny_sd1.safetensors", config=fp32)
    assert control.kind == "controlnet" and control.family == "sd1"


def test_diffusers_t2i_adapter_names_are_renumbered_to_the_original_body_blocks():
    sd = {"adapter.conv_in.weight": 1, "adapter.body.1.resnets.1.block2.weight": 2, "adapter.body.2.in_conv.weight": 3}
    assert t2i_adapter_to_ldm(sd) == {"conv_in.weight": 1, "body.3.block2.weight": 2, "body.4.in_conv.weight": 3}
