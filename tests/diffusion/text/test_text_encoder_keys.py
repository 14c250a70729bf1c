"""Full-size text encoders, built on the meta device, against the reference checkpoint key lists."""

from pathlib import Path

import pytest
import torch

from diffusion.keymaps.clip import (extract_encoders, hf_to_openclip, openclip_to_hf, standalone_to_hf,
                                    to_checkpoint)
from diffusion.models.text_encoders import clip_from_state_dict, family_configs, infer_config

KEYS = Path(__file__).resolve().parents[2] / "fixtures" / "text_keys"
DTYPES = {"float16": torch.float16, "float32": torch.float32, "int64": torch.int64}
CASES = [("sd15", "sd1"), ("sd21_768v", "sd2"), ("sdxl_base", "sdxl")]


def meta_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The text-encoder part of a reference list as meta tensors of the listed shapes and dtypes."""
    sd = {}
    for line in (KEYS / f"{name}.tsv").read_text().splitlines():
        key, shape, dtype = line.split("\t")
        dims = [int(s) for s in shape.strip("[]").split(",") if s.strip()]
        sd[key] = torch.empty(dims, dtype=DTYPES[dtype], device="meta")
    return sd


@pytest.mark.parametrize("name,family", CASES)
def test_full_size_encoders_consume_exactly_the_text_encoder_keys_of_the_reference_list(name, family):
    sd = meta_state_dict(name)
    clip = clip_from_state_dict(sd, family, torch.float16)  # strict load: no missing or extra parameter
    loaded = {n: dict(e.named_parameters()) for n, e in clip.encoders.items()}
    assert list(loaded) == [c.name for c in family_configs(family)]
    converted = extract_encoders(sd, family)
    for enc_name, enc in clip.encoders.items():
        shapes = {k: tuple(v.shape) for k, v in converted[enc_name].items()}
        assert shapes == {k: tuple(v.shape) for k, v in enc.hf_state_dict().items()}
    # Saving writes back every listed key (SD1's position_ids aside, which ComfyUI does not write).
    back = to_checkpoint({n: e.hf_state_dict() for n, e in clip.encoders.items()}, family)
    expected = {k: tuple(v.shape) for k, v in sd.items() if not (family == "sd1" and k.endswith("position_ids"))}
    assert {k: tuple(v.shape) for k, v in back.items()} == expected
    assert all(back[k].dtype == torch.int64 for k in back if k.endswith("position_ids"))


@pytest.mark.parametrize("name,family", CASES)
def test_configs_read_from_real_shapes_equal_the_published_encoder_configs(name, family):
    converted = extract_encoders(meta_state_dict(name), family)
    for base in family_configs(family):
        assert infer_config(base, converted[base.name]) == base


def test_sd21_bigg_style_openclip_keys_map_to_hf_names_with_split_qkv_and_transposed_projection():
    d = 4
    g = torch.Generator().manual_seed(3)
    openclip = {
        "transformer.resblocks.0.attn.in_proj_weight": torch.randn(3 * d, d, generator=g),
        "transformer.resblocks.0.attn.in_proj_bias": torch.randn(3 * d, generator=g),
        "text_projection": torch.randn(d, d, generator=g),
        "ln_final.weight": torch.randn(d, generator=g),
    }
    hf = openclip_to_hf(openclip)
    w = openclip["transformer.resblocks.0.attn.in_proj_weight"]
    assert torch.equal(hf["text_model.encoder.layers.0.self_attn.q_proj.weight"], w[:d])
    assert torch.equal(hf["text_model.encoder.layers.0.self_attn.k_proj.weight"], w[d:2 * d])
    assert torch.equal(hf["text_model.encoder.layers.0.self_attn.v_proj.bias"],
                       openclip["transformer.resblocks.0.attn.in_proj_bias"][2 * d:])
    x = torch.randn(2, d, generator=g)
    assert torch.allclose(x @ openclip["text_projection"], torch.nn.functional.linear(x, hf["text_projection.weight"]))
    assert hf["text_model.final_layer_norm.weight"] is openclip["ln_final.weight"]
    back = hf_to_openclip(hf)
    assert back.keys() == openclip.keys()
    assert all(torch.equal(back[k], openclip[k]) for k in openclip)


def test_old_sd1_files_without_the_text_model_level_load_the_same_weights():
    sd = meta_state_dict("sd15")
    old = {k.replace("transformer.text_model.", "transformer."): v for k, v in sd.items()}
    assert extract_encoders(old, "sd1")["clip_l"].keys() == extract_encoders(sd, "sd1")["clip_l"].keys()


def test_sd2_files_in_the_sgm_layout_load_the_same_encoder():
    sd = meta_state_dict("sd21_768v")
    sgm = {k.replace("cond_stage_model.model.", "conditioner.embedders.0.model."): v for k, v in sd.items()}
    assert extract_encoders(sgm, "sd2")["clip_h"].keys() == extract_encoders(sd, "sd2")["clip_h"].keys()


@pytest.mark.parametrize("name,family,prefix", [("sd15", "sd1", "cond_stage_model.transformer."),
                                                ("sd21_768v", "sd2", "cond_stage_model.model."),
                                                ("sdxl_base", "sdxl", "conditioner.embedders.1.model.")])
def test_standalone_text_encoder_files_in_any_layout_get_the_same_hf_names(name, family, prefix):
    sd = meta_state_dict(name)
    expected = extract_encoders(sd, family)[{"sd1": "clip_l", "sd2": "clip_h", "sdxl": "clip_g"}[family]]
    alone = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    assert standalone_to_hf(alone).keys() == expected.keys()
    if family == "sd1":  # transformers-5 save_pretrained drops the `text_model.` level
        v5 = {k.removeprefix("text_model."): v for k, v in alone.items()}
        assert standalone_to_hf(v5).keys() == expected.keys()
