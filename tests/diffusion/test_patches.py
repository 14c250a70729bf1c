"""LoRA-family patches: every format's patched weight equals the formula of checkpoints.md §8.4."""

import torch

from diffusion.patches import LoHa, LoKr, LoRA, match_patches, text_encoder_key_map, unet_key_map

g = torch.Generator().manual_seed(0)


def rand(*shape):
    return torch.randn(*shape, generator=g)


def test_kohya_lora_scales_by_alpha_over_rank_and_strength():
    w, up, down = rand(6, 5), rand(6, 2), rand(2, 5)
    out = LoRA(up=up, down=down, alpha=1.0).apply(w, 0.5)
    assert torch.allclose(out, w + 0.5 * (1.0 / 2) * up @ down)


def test_lora_without_alpha_uses_scale_one():
    w, up, down = rand(4, 3), rand(4, 1), rand(1, 3)
    assert torch.allclose(LoRA(up=up, down=down).apply(w, 1.0), w + up @ down)


def test_conv_lora_with_tucker_mid_weight_matches_the_contraction():
    w = rand(8, 4, 3, 3)
    up, down, mid = rand(8, 2, 1, 1), rand(2, 4, 1, 1), rand(2, 2, 3, 3)
    out = LoRA(up=up, down=down, mid=mid, alpha=2.0).apply(w, 1.0)
    expected = torch.zeros_like(w)
    for o in range(8):
        for i in range(4):
            for q in range(2):
                for p in range(2):
                    expected[o, i] += up[o, q, 0, 0] * mid[q, p] * down[p, i, 0, 0]
    assert torch.allclose(out, w + expected, atol=1e-5)


def test_conv_3x3_lora_reshapes_the_product_to_the_kernel():
    w, up, down = rand(8, 4, 3, 3), rand(8, 2, 1, 1), rand(2, 4, 3, 3)
    out = LoRA(up=up, down=down, alpha=2.0).apply(w, 1.0)
    assert torch.allclose(out, w + (up.flatten(1) @ down.flatten(1)).reshape(w.shape), atol=1e-5)


def test_loha_is_the_hadamard_product_of_two_low_rank_updates():
    w = rand(6, 5)
    w1a, w1b, w2a, w2b = rand(6, 2), rand(2, 5), rand(6, 2), rand(2, 5)
    out = LoHa(w1a, w1b, w2a, w2b, alpha=1.0).apply(w, 2.0)
    assert torch.allclose(out, w + 2.0 * 0.5 * (w1a @ w1b) * (w2a @ w2b), atol=1e-5)


def test_lokr_is_a_kronecker_product():
    w = rand(6, 4)
    w1, w2a, w2b = rand(2, 2), rand(3, 1), rand(1, 2)
    out = LoKr(w1=w1, w2_a=w2a, w2_b=w2b, alpha=2.0).apply(w, 1.0)
    assert torch.allclose(out, w + 2.0 * torch.kron(w1, w2a @ w2b), atol=1e-5)


def test_dora_rescales_rows_to_the_stored_magnitude():
    w, up, down = rand(4, 3), rand(4, 1), rand(1, 3)
    magnitude = rand(4, 1).abs() + 0.5
    out = LoRA(up=up, down=down, dora_scale=magnitude).apply(w, 1.0)
    patched = w + up @ down
    expected = patched * magnitude / (w.norm(dim=1, keepdim=True) + torch.finfo(torch.float32).eps)
    assert torch.allclose(out, expected, atol=1e-5)


def test_files_are_matched_by_generated_names_and_leftovers_are_reported():
    unet_keys = ["input_blocks.1.1.proj_in.weight", "input_blocks.1.1.proj_in.bias", "out.2.weight"]
    te_keys = ["text_model.encoder.layers.0.mlp.fc1.weight"]
    sd = {
        "lora_unet_input_blocks_1_1_proj_in.lora_up.weight": rand(4, 1),
        "lora_unet_input_blocks_1_1_proj_in.lora_down.weight": rand(1, 4),
        "lora_unet_input_blocks_1_1_proj_in.alpha": torch.tensor(1.0),
        "diffusion_model.out.2.diff": rand(3, 3),
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": rand(2, 1),
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": rand(1, 2),
        "lora_unet_nonexistent_layer.lora_up.weight": rand(1, 1),
    }
    unet, clip = match_patches(sd, [unet_key_map(unet_keys), text_encoder_key_map("clip_l", te_keys)])
    assert set(unet.patches) == {"input_blocks.1.1.proj_in.weight", "out.2.weight"}
    assert set(clip.patches) == {"text_model.encoder.layers.0.mlp.fc1.weight"}
    assert unet.unmatched == ["lora_unet_nonexistent_layer.lora_up.weight"]


def test_peft_and_diffusers_spellings_resolve_through_the_diffusers_path():
    keys = ["input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"]
    table = {"input_blocks.1.1.transformer_blocks.0.attn1.to_q": "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"}
    key_map = unet_key_map(keys, table)
    assert key_map["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"] == \
        "input_blocks.1.1.transformer_blocks.0.attn1.to_q"
    assert "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q" in key_map


def test_sdxl_second_encoder_takes_te2_names_and_the_projection():
    keys = ["text_model.encoder.layers.3.self_attn.q_proj.weight", "text_projection.weight"]
    key_map = text_encoder_key_map("clip_g", keys, sdxl_second=True, prefix="clip_g.")
    assert key_map["lora_te2_text_model_encoder_layers_3_self_attn_q_proj"] == "clip_g.text_model.encoder.layers.3.self_attn.q_proj"
    assert key_map["lora_te2_text_projection"] == "clip_g.text_projection"
    assert "lora_te_text_model_encoder_layers_3_self_attn_q_proj" not in key_map


def test_diffusers_names_of_every_sd15_and_sdxl_unet_weight_round_trip_through_the_loader_table():
    from diffusion import configs
    from diffusion.keymaps.unet import block_map, rename
    from diffusion.patches import ldm_to_diffusers_paths
    from tests.diffusion.keylists import read_keys, section

    for name, config in (("sd15", configs.SD15), ("sdxl_base", configs.SDXL)):
        keys = [k for k in section(read_keys(name), "model.diffusion_model.") if k.endswith(".weight")]
        to_diffusers = ldm_to_diffusers_paths(config, keys)
        assert len(to_diffusers) == len(keys)
        diffusers_keys = [to_diffusers[k[:-len(".weight")]] + ".weight" for k in keys]
        assert len(set(diffusers_keys)) == len(keys)
        blocks = block_map(diffusers_keys)
        assert [rename(k, blocks) for k in diffusers_keys] == keys, name
