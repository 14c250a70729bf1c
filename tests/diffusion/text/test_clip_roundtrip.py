"""Tiny text encoders saved in the single-file layout load back and encode identically."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffusion.clip_handle import ClipHandle
from diffusion.keymaps.clip import to_checkpoint
from diffusion.models.text_encoders import build_encoder, clip_from_state_dict, family_configs, tiny_config


def tiny_handle(family: str, seed: int = 1, width: int = 32) -> ClipHandle:
    encoders = {c.name: build_encoder(tiny_config(family, width=width, encoder=c.name), dtype=torch.float32,
                                      generator=torch.Generator().manual_seed(seed))
                for c in family_configs(family)}
    return ClipHandle(encoders, family)


def checkpoint_of(clip: ClipHandle) -> dict[str, torch.Tensor]:
    return to_checkpoint({n: e.hf_state_dict() for n, e in clip.encoders.items()}, clip.family)


@pytest.mark.parametrize("family,cond_width", [("sd1", 32), ("sd2", 32), ("sdxl", 64), ("sdxl_refiner", 32)])
def test_tiny_encoder_saved_as_a_single_file_checkpoint_encodes_the_same_after_loading(tmp_path, family, cond_width):
    clip = tiny_handle(family, width=32)
    path = tmp_path / "tiny.safetensors"
    save_file(checkpoint_of(clip), str(path))
    loaded = clip_from_state_dict(load_file(str(path)), family, torch.float32)
    prompt = "a (red:1.3) cube beside ((a blue sphere)), [studio]"
    cond, pooled = clip.encode(prompt)
    cond2, pooled2 = loaded.encode(prompt)
    assert torch.equal(cond, cond2) and torch.equal(pooled, pooled2)
    assert cond.shape == (1, 77, cond_width)  # SDXL: clip_l and clip_g side by side
    assert pooled.shape == (1, 32)


def test_tiny_sd1_checkpoint_carries_the_sd1_key_layout():
    keys = checkpoint_of(tiny_handle("sd1")).keys()
    assert "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight" in keys
    assert "cond_stage_model.transformer.text_model.encoder.layers.1.self_attn.q_proj.weight" in keys
    assert all(k.startswith("cond_stage_model.transformer.text_model.") for k in keys)


def test_heads_are_inferred_from_width_so_a_wider_tiny_model_loads_without_a_special_case():
    clip = tiny_handle("sd1", width=128)
    loaded = clip_from_state_dict(checkpoint_of(clip), "sd1", torch.float32)
    assert loaded.encoders["clip_l"].config == clip.encoders["clip_l"].config
    assert loaded.encoders["clip_l"].config.heads == 2


def test_a_stray_clip_l_text_projection_is_ignored_and_sd1_pooled_stays_unprojected():
    clip = tiny_handle("sd1")
    sd = checkpoint_of(clip)
    sd["cond_stage_model.transformer.text_projection.weight"] = torch.eye(32) * 3
    loaded = clip_from_state_dict(sd, "sd1", torch.float32)
    assert torch.equal(loaded.encode("a cat")[1], clip.encode("a cat")[1])
