"""Encoding behaviour on tiny encoders: CLIP math, CLIP skip, weights, long prompts, embeddings, SDXL, patches."""

import pytest
import torch

from diffusion.clip_handle import ClipHandle
from diffusion.embeddings import EmbeddingLookup
from diffusion.keymaps.clip import to_checkpoint
from diffusion.models.text_encoders import build_encoder, clip_from_state_dict, family_configs, tiny_config
from diffusion.patches import Diff, LoRA, text_encoder_key_map
from diffusion.prompt import chunk, token_groups
from diffusion.tokenizer import ClipTokenizer

TOK = ClipTokenizer()


def encoder(family, name=None, width=32, layers=3, seed=1):
    return build_encoder(tiny_config(family, width=width, layers=layers, encoder=name), dtype=torch.float32,
                         generator=torch.Generator().manual_seed(seed))


def handle(family, widths=None, seed=1):
    widths = widths or {}
    return ClipHandle({c.name: encoder(family, c.name, widths.get(c.name, 32), seed=seed)
                       for c in family_configs(family)}, family)


def ids_of(text, pad):
    return torch.tensor([[t for t, _ in chunk(token_groups(text, TOK), pad)[0]]])


class Lookup:
    """An embeddings stand-in: name → vectors, the same for every encoder."""

    def __init__(self, **named):
        self.named = named

    def vectors(self, name, encoder, width):
        return self.named.get(name)


@pytest.mark.parametrize("family", ["sd1", "sd2"])
def test_forward_matches_transformers_clip_text_model(family):
    enc = encoder(family, width=64)
    tokens = ids_of("a photo of a cat, highly detailed", enc.config.pad_id)
    ref = enc.transformer(input_ids=tokens, output_hidden_states=True)
    z, pooled = enc(tokens)
    assert torch.allclose(z, ref.last_hidden_state, atol=1e-5)
    pooled_ref = ref.pooler_output if enc.text_projection is None else enc.text_projection(ref.pooler_output)
    assert torch.allclose(pooled, pooled_ref, atol=1e-5)
    z2, _ = enc(tokens, layer=-2)
    assert torch.allclose(z2, enc.text.final_layer_norm(ref.hidden_states[-2]), atol=1e-5)


def test_sd1_clip_skip_2_uses_the_penultimate_layer_with_final_layer_norm():
    clip = handle("sd1")
    enc = clip.encoders["clip_l"]
    tokens = ids_of("a red cube", enc.config.pad_id)
    ref = enc.transformer(input_ids=tokens, output_hidden_states=True)
    default, pooled = clip.encode("a red cube")
    skip = clip.clone()
    skip.set_layer(-2)
    cond, pooled2 = skip.encode("a red cube")
    assert torch.allclose(cond[0], enc.text.final_layer_norm(ref.hidden_states[-2])[0], atol=1e-5)
    assert not torch.allclose(cond, default) and torch.equal(pooled, pooled2)  # pooled always from the last layer
    last = clip.clone()
    last.set_layer(-1)
    assert torch.equal(last.encode("a red cube")[0], default)
    beyond = clip.clone()
    beyond.set_layer(-24)  # |k| > N falls back to the last layer
    assert torch.equal(beyond.encode("a red cube")[0], default)
    assert clip.layer is None  # clones carry their own choice


def test_sdxl_defaults_to_penultimate_layers_without_final_layer_norm_and_minus_one_differs():
    clip = handle("sdxl", {"clip_g": 48})
    cond, pooled = clip.encode("a red cube")
    assert cond.shape == (1, 77, 32 + 48) and pooled.shape == (1, 48)
    for name, part in (("clip_l", cond[..., :32]), ("clip_g", cond[..., 32:])):
        enc = clip.encoders[name]
        ref = enc.transformer(input_ids=ids_of("a red cube", enc.config.pad_id), output_hidden_states=True)
        assert torch.allclose(part, ref.hidden_states[-2], atol=1e-5)  # no final LayerNorm
    g = clip.encoders["clip_g"]
    ref = g.transformer(input_ids=ids_of("a red cube", 0))
    assert torch.allclose(pooled, g.text_projection(ref.pooler_output), atol=1e-5)
    minus_one = clip.clone()
    minus_one.set_layer(-1)
    assert not torch.allclose(minus_one.encode("a red cube")[0], cond)


def test_sd2_pads_with_token_zero_and_sd1_with_end_of_text():
    assert handle("sd2").tokenize("cat")["clip_h"][0][-1][0] == 0
    assert handle("sd1").tokenize("cat")["clip_l"][0][-1][0] == 49407


def test_weighted_tokens_are_interpolated_against_the_empty_prompt_and_pooled_is_untouched():
    clip = handle("sd1")
    plain, pooled_plain = clip.encode("a cat photo")
    empty, _ = clip.encode("")
    weighted, pooled = clip.encode("a (cat:1.5) photo")
    expected = plain.clone()
    expected[0, 2] = (plain[0, 2] - empty[0, 2]) * 1.5 + empty[0, 2]
    assert torch.allclose(weighted, expected, atol=1e-6)
    assert torch.equal(weighted[0, :2], plain[0, :2]) and torch.equal(weighted[0, 3:], plain[0, 3:])
    assert torch.equal(pooled, pooled_plain)
    assert torch.equal(clip.encode("a (cat:1.0) photo")[0], plain)
    zero, _ = clip.encode("a (cat:0) photo")
    assert torch.equal(zero[0, 2], empty[0, 2])


def test_prompts_over_75_tokens_are_encoded_as_concatenated_77_token_windows():
    clip = handle("sd1")
    cond, pooled = clip.encode("cat " * 80)
    assert cond.shape == (1, 154, 32)
    windows = clip.tokenize("cat " * 80)["clip_l"]
    first, p1 = clip.encode_chunks({"clip_l": windows[:1]})
    second, _ = clip.encode_chunks({"clip_l": windows[1:]})
    assert torch.allclose(cond, torch.cat([first, second], dim=1), atol=1e-6)
    assert torch.equal(pooled, p1)  # pooled comes from the first window


def test_an_embedding_vector_takes_the_place_of_a_token_embedding():
    clip = handle("sd1")
    row = clip.encoders["clip_l"].text.embeddings.token_embedding.weight[TOK.encode("cat")[0]]
    cond, pooled = clip.encode("a photo of embedding:catlike", Lookup(catlike=row.clone()))
    ref, ref_pooled = clip.encode("a photo of cat")
    assert torch.allclose(cond, ref, atol=1e-6) and torch.allclose(pooled, ref_pooled, atol=1e-6)


def test_missing_embeddings_warn_and_the_prompt_still_encodes():
    clip = handle("sd1")
    warnings = []
    cond, _ = clip.encode("a photo of embedding:gone", Lookup(), warnings.append)
    assert torch.equal(cond, clip.encode("a photo of")[0])
    assert warnings and "gone" in warnings[0]


def test_sdxl_reports_a_missing_embedding_once_and_an_unreadable_file_as_missing(tmp_path):
    clip = handle("sdxl", {"clip_g": 48})
    warnings = []
    clip.encode("a embedding:gone photo", Lookup(), warnings.append)
    assert len(warnings) == 1
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    warnings.clear()
    cond, _ = clip.encode("a embedding:broken photo", EmbeddingLookup([str(tmp_path)]), warnings.append)
    assert torch.equal(cond, clip.encode("a photo")[0])
    assert any("could not read" in w for w in warnings)


def test_sdxl_drops_embedding_vectors_of_the_other_width_from_clip_g_only():
    clip = handle("sdxl", {"clip_g": 48})
    row = clip.encoders["clip_l"].text.embeddings.token_embedding.weight[TOK.encode("cat")[0]]
    warnings = []
    cond, pooled = clip.encode("a embedding:catlike photo", Lookup(catlike=row.clone()), warnings.append)
    with_cat, _ = clip.encode("a cat photo")
    without, pooled_without = clip.encode("a photo")
    assert torch.allclose(cond[..., :32], with_cat[..., :32], atol=1e-6)
    assert torch.allclose(cond[..., 32:], without[..., 32:], atol=1e-6)
    assert torch.allclose(pooled, pooled_without, atol=1e-6)
    assert warnings


def test_sdxl_two_prompts_of_different_length_are_evened_out_with_empty_windows():
    clip = handle("sdxl", {"clip_g": 48})
    cond, pooled = clip.encode_sdxl("dog " * 80, "a cat")
    assert cond.shape == (1, 154, 80)
    empty_l = clip.encode("")[0][..., :32]
    assert torch.allclose(cond[:, 77:, :32], empty_l, atol=1e-6)
    assert torch.allclose(cond[:, :77, :32], clip.encode("a cat")[0][..., :32], atol=1e-6)
    assert torch.equal(pooled, clip.encode("dog " * 80)[1])


def test_refiner_uses_clip_g_alone_and_refuses_the_two_prompt_encode():
    clip = handle("sdxl_refiner")
    cond, pooled = clip.encode("a cat")
    assert cond.shape == (1, 77, 32) and pooled.shape == (1, 32)
    with pytest.raises(ValueError, match="SDXL base"):
        clip.encode_sdxl("a", "b")


def test_fp32_checkpoints_are_stored_as_fp16_but_encoded_in_fp32():
    clip = handle("sd1")
    sd = to_checkpoint({n: e.hf_state_dict() for n, e in clip.encoders.items()}, "sd1")
    half = clip_from_state_dict(sd, "sd1", torch.float16)
    assert all(p.dtype == torch.float16 for p in half.encoders.parameters())
    cond, _ = half.encode("a cat")
    rounded = clip_from_state_dict({k: v.half().float() for k, v in sd.items()}, "sd1", torch.float32)
    assert cond.dtype == torch.float32 and torch.equal(cond, rounded.encode("a cat")[0])


def test_lora_patches_change_only_the_patched_clone_and_weights_come_back_bit_identical():
    clip = handle("sd1")
    before = {k: v.clone() for k, v in clip.encoders.state_dict().items()}
    plain, _ = clip.encode("a cat")
    key_map = text_encoder_key_map("clip_l", clip.hf_weight_keys("clip_l"), prefix="clip_l.transformer.")
    g = torch.Generator().manual_seed(5)
    lora = LoRA(up=torch.randn(32, 4, generator=g), down=torch.randn(4, 32, generator=g), alpha=4.0,
                mid=None, dora_scale=None)
    target = key_map["lora_te_text_model_encoder_layers_0_self_attn_q_proj"] + ".weight"
    patched = clip.clone()
    assert patched.add_patches({target: lora, "clip_l.transformer.nope.weight": lora}, 0.8) == {target}
    cond, _ = patched.encode("a cat")
    assert not torch.allclose(cond, plain)
    assert torch.equal(clip.encode("a cat")[0], plain)
    after = clip.encoders.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_saving_a_patched_clip_writes_the_merged_weights_in_the_checkpoint_layout():
    clip = handle("sd2")
    key = "clip_h.transformer.text_model.encoder.layers.1.mlp.fc2.weight"
    patched = clip.clone()
    patched.add_patches({key: Diff(torch.full((32, 128), 0.01))}, 1.0)
    sd = patched.checkpoint_state_dict()
    assert "cond_stage_model.model.transformer.resblocks.1.mlp.c_proj.weight" in sd
    loaded = clip_from_state_dict(sd, "sd2", torch.float32)
    assert torch.equal(loaded.encode("a cat")[0], patched.encode("a cat")[0])
    assert not torch.equal(loaded.encode("a cat")[0], clip.encode("a cat")[0])


def test_the_contracted_patch_keys_cover_every_parameter():
    clip = handle("sdxl")
    keys = clip.weight_keys()
    assert "clip_l.transformer.text_model.encoder.layers.0.mlp.fc1.weight" in keys
    assert "clip_g.transformer.text_projection.weight" in keys
    assert len(keys) == sum(1 for _ in clip.encoders.parameters())


def test_configs_are_the_published_ones_for_each_family():
    cfg = {c.name: c for c in family_configs("sdxl")}
    assert (cfg["clip_g"].width, cfg["clip_g"].layers, cfg["clip_g"].heads, cfg["clip_g"].activation) == \
        (1280, 32, 20, "gelu")
    assert (cfg["clip_l"].layer_norm_hidden_state, cfg["clip_l"].pad_id) == (False, 49407)
    assert family_configs("sd15_inpaint")[0].activation == "quick_gelu"
