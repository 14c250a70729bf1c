"""LoRA loader nodes patch clones of MODEL and CLIP; the originals stay bit-identical."""

import os

import pytest
import torch
from safetensors.torch import save_file

from diffusion import configs
from diffusion.clip_handle import ClipHandle
from diffusion.latent_formats import for_family
from diffusion.model_handle import ModelHandle
from diffusion.models.text_encoders import build_encoder, tiny_config
from diffusion.models.unet import UNetModel
from nodes import lora as L

UNET_KEY = "input_blocks.1.1.proj_in"          # conv 1×1 in SD1's layout
UNET_ATTN = "input_blocks.1.1.transformer_blocks.0.attn2.to_k"
TE_KEY = "text_model.encoder.layers.0.mlp.fc1"


@pytest.fixture
def model():
    torch.manual_seed(0)
    unet = UNetModel(**configs.TINY_SD1).eval().requires_grad_(False)
    return ModelHandle(unet, configs.TINY_SD1, "sd1", "eps", for_family("sd1"))


@pytest.fixture
def clip():
    enc = build_encoder(tiny_config("sd1", width=32, layers=2, encoder="clip_l"), dtype=torch.float32,
                        generator=torch.Generator().manual_seed(1))
    return ClipHandle({"clip_l": enc}, "sd1")


def lora_file(paths, tensors, name="style.safetensors"):
    folder = paths.folder_paths("loras")[0]
    os.makedirs(folder, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(folder, name))
    return name


def weight(handle_module, key):
    return dict(handle_module.named_parameters())[key].detach().clone()


def test_lora_loader_patches_unet_and_text_encoder_by_the_kohya_formula(ctx, paths, model, clip):
    g = torch.Generator().manual_seed(3)
    w_unet = weight(model.unet, UNET_KEY + ".weight")
    w_attn = weight(model.unet, UNET_ATTN + ".weight")
    up, down = torch.randn(w_unet.shape[0], 2, 1, 1, generator=g), torch.randn(2, w_unet.shape[1], 1, 1, generator=g)
    up2, down2 = torch.randn(w_attn.shape[0], 2, generator=g), torch.randn(2, w_attn.shape[1], generator=g)
    te_shape = clip.encoders["clip_l"].hf_state_dict()[TE_KEY + ".weight"].shape
    te_up, te_down = torch.randn(te_shape[0], 1, generator=g), torch.randn(1, te_shape[1], generator=g)
    name = lora_file(paths, {
        "lora_unet_input_blocks_1_1_proj_in.lora_up.weight": up,
        "lora_unet_input_blocks_1_1_proj_in.lora_down.weight": down,
        "lora_unet_input_blocks_1_1_proj_in.alpha": torch.tensor(1.0),
        # the diffusers-style kohya spelling of an attention projection
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": up2,
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": down2,
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": te_up,
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": te_down,
    })
    new_model, new_clip = L.lora_loader(ctx, model, clip, name, 0.8, 0.5)
    assert new_model is not model and new_clip is not clip
    with new_model.active() as unet:
        got = weight(unet, UNET_KEY + ".weight")
        got_attn = weight(unet, UNET_ATTN + ".weight")
    expected = w_unet + 0.8 * 0.5 * (up.flatten(1) @ down.flatten(1)).reshape(w_unet.shape)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(got_attn, w_attn + 0.8 * up2 @ down2, atol=1e-6)
    # after use the shared weights are exactly the originals again
    assert torch.equal(weight(model.unet, UNET_KEY + ".weight"), w_unet)
    assert len(new_clip.patches) == 1 and not clip.patches
    assert ctx.warnings == []


def test_text_encoder_lora_changes_the_encoding_only_with_clip_strength(ctx, paths, clip):
    te_shape = clip.encoders["clip_l"].hf_state_dict()[TE_KEY + ".weight"].shape
    g = torch.Generator().manual_seed(4)
    name = lora_file(paths, {
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.randn(te_shape[0], 1, generator=g),
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.randn(1, te_shape[1], generator=g),
    })
    base, _ = clip.encode("a red circle")
    model_stub = None
    _, patched = L._apply(ctx, "LoraLoader", model_stub, clip, name, 1.0, 1.0)
    changed, _ = patched.encode("a red circle")
    assert not torch.allclose(base, changed)
    again, _ = clip.encode("a red circle")
    assert torch.equal(base, again)


def test_both_strengths_zero_return_the_inputs_unchanged(ctx, paths, model, clip):
    name = lora_file(paths, {"lora_unet_input_blocks_1_1_proj_in.diff": torch.zeros(1)})
    assert L.lora_loader(ctx, model, clip, name, 0.0, 0.0) == (model, clip)


def test_keys_that_match_nothing_are_reported_with_a_count_and_examples(ctx, paths, model):
    name = lora_file(paths, {
        "lora_unet_no_such_layer.lora_up.weight": torch.ones(2, 1),
        "lora_unet_no_such_layer.lora_down.weight": torch.ones(1, 2),
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.ones(2, 1),
    })
    L.lora_loader_model_only(ctx, model, name, 1.0)
    assert len(ctx.warnings) == 1
    assert "3 keys of style.safetensors matched no weight" in ctx.warnings[0]
    assert "lora_unet_no_such_layer.lora_down.weight" in ctx.warnings[0]


def test_stacked_loras_apply_in_order(ctx, paths, model):
    w = weight(model.unet, UNET_KEY + ".weight")
    d1, d2 = torch.full(w.shape, 0.25), torch.full(w.shape, -1.0)
    a = lora_file(paths, {f"diffusion_model.{UNET_KEY}.diff": d1}, "a.safetensors")
    b = lora_file(paths, {f"diffusion_model.{UNET_KEY}.diff": d2}, "b.safetensors")
    stacked = L.lora_loader_model_only(ctx, L.lora_loader_model_only(ctx, model, a, 2.0), b, 0.5)
    with stacked.active() as unet:
        assert torch.allclose(weight(unet, UNET_KEY + ".weight"), w + 0.5 - 0.5, atol=1e-6)


def write_hypernetwork(paths, name, width=32, activation="relu", layer_norm=False):
    """An A1111 hypernetwork .pt: {width: [k_state_dict, v_state_dict]} plus its settings."""
    g = torch.Generator().manual_seed(9)

    def mlp():
        sd = {"linear.0.weight": torch.randn(2 * width, width, generator=g) * 0.1,
              "linear.0.bias": torch.randn(2 * width, generator=g) * 0.1}
        if layer_norm:
            sd.update({"linear.1.weight": torch.ones(2 * width), "linear.1.bias": torch.zeros(2 * width)})
        sd.update({"linear.2.weight": torch.randn(width, 2 * width, generator=g) * 0.1,
                   "linear.2.bias": torch.randn(width, generator=g) * 0.1})
        return sd

    folder = paths.folder_paths("hypernetworks")[0]
    os.makedirs(folder, exist_ok=True)
    torch.save({width: [mlp(), mlp()], "activation_func": activation, "is_layer_norm": layer_norm,
                "name": "test"}, os.path.join(folder, name))
    return name


def test_hypernetwork_rewrites_attention_keys_and_values_only_while_the_model_runs(ctx, paths, model):
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    t, context = torch.tensor([500.0]), torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), model.active() as unet:
        plain = unet(x, t, context)
    patched = L.hypernetwork_loader(ctx, model, write_hypernetwork(paths, "hn.pt"), 1.0)
    with torch.no_grad(), patched.active() as unet:
        hooked = unet(x, t, context)
    with torch.no_grad(), model.active() as unet:
        again = unet(x, t, context)
    assert not torch.allclose(plain, hooked, atol=1e-4)
    assert torch.equal(plain, again)
    zero = L.hypernetwork_loader(ctx, model, "hn.pt", 0.0)
    with torch.no_grad(), zero.active() as unet:
        assert torch.allclose(unet(x, t, context), plain, atol=1e-6)


def test_hypernetwork_module_follows_the_a1111_layer_rules():
    from diffusion.hypernetwork import Hypernetwork

    g = torch.Generator().manual_seed(0)
    layers = {"linear.0.weight": torch.randn(6, 3, generator=g), "linear.0.bias": torch.randn(6, generator=g),
              "linear.1.weight": torch.randn(3, 6, generator=g), "linear.1.bias": torch.randn(3, generator=g)}
    hn = Hypernetwork.from_state_dict({3: [layers, layers], "activation_func": "relu"}, 1.0)
    x = torch.randn(2, 3, generator=g)
    expected = torch.relu(x @ layers["linear.0.weight"].T + layers["linear.0.bias"]) @ layers["linear.1.weight"].T \
        + layers["linear.1.bias"]  # no activation after the last Linear
    assert torch.allclose(hn.modules[3][0](x), expected, atol=1e-5)
    with pytest.raises(ValueError, match="unsupported hypernetwork activation"):
        Hypernetwork.from_state_dict({3: [layers, layers], "activation_func": "gelu"}, 1.0)
