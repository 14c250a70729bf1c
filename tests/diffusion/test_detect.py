"""Detection of model families and file kinds from key names and shapes alone."""
import pytest
import torch

from diffusion import configs, detect
from tests.diffusion.keylists import read_keys
from tests.diffusion.tiny_models import FAMILY_CONFIGS, tiny_unet


def _shapes(name):
    return {k: shape for k, (shape, _) in read_keys(name).items()}


@pytest.mark.parametrize("name,family,config,encoders", [
    ("sd15", "sd1", configs.SD15, ["clip_l"]),
    ("sd15_inpaint", "sd1", configs.SD15_INPAINT, ["clip_l"]),
    ("sd21_768v", "sd2", configs.SD20, ["clip_h"]),
    ("sdxl_base", "sdxl", configs.SDXL, ["clip_l", "clip_g"]),
])
def test_reference_key_lists_are_detected_as_their_family_and_exact_config(name, family, config, encoders):
    shapes = _shapes(name)
    assert detect.file_kind(shapes) == "checkpoint"
    info = detect.detect_checkpoint(shapes)
    assert (info.family, info.unet_config, info.unet_prefix) == (family, config, "model.diffusion_model.")
    assert info.has_vae and info.text_encoders == encoders
    assert info.inpaint == (name == "sd15_inpaint")
    assert info.prediction == "eps"  # v-prediction needs tensor values, which a key list does not have


def test_controlnet_key_list_is_an_sd15_configured_controlnet_with_a_colour_hint():
    shapes = _shapes("controlnet_v11p_sd15_canny")
    assert detect.file_kind(shapes) == "controlnet"
    family, cfg, hint = detect.detect_controlnet(shapes)
    assert family == "sd1" and hint == 3
    assert {k: cfg[k] for k in ("model_channels", "channel_mult", "transformer_depth", "context_dim")} == \
        {k: configs.SD15[k] for k in ("model_channels", "channel_mult", "transformer_depth", "context_dim")}


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_tiny_models_in_the_standard_layouts_are_detected_with_every_size_from_shapes(family):
    shapes = {f"model.diffusion_model.{k}": tuple(v.shape) for k, v in tiny_unet(family).state_dict().items()}
    info = detect.detect_checkpoint(shapes)
    assert info.family == family and info.unet_config == FAMILY_CONFIGS[family]


def _sd2_with_norm_bias(std_target: float):
    unet = tiny_unet("sd2")
    sd = {f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()}
    last = max(j for j, d in enumerate(configs.TINY_SD2["transformer_depth_output"]) if d)
    key = f"model.diffusion_model.output_blocks.{last}.1.transformer_blocks.0.norm1.bias"
    values = torch.tensor([1.0, -1.0]).repeat(sd[key].numel() // 2)
    sd[key] = values * std_target
    return sd


@pytest.mark.parametrize("std,expected", [(0.2, "v"), (0.05, "eps")])
def test_sd2_prediction_type_comes_from_the_spread_of_the_last_norm_bias(std, expected):
    sd = _sd2_with_norm_bias(std)
    info = detect.detect_checkpoint({k: tuple(v.shape) for k, v in sd.items()}, get_tensor=sd.__getitem__)
    assert info.prediction == expected


def test_sdxl_prediction_type_comes_from_marker_keys():
    shapes = {f"model.diffusion_model.{k}": tuple(v.shape) for k, v in tiny_unet("sdxl").state_dict().items()}
    assert detect.detect_checkpoint(shapes).prediction == "eps"
    info = detect.detect_checkpoint({**shapes, "v_pred": (0,), "ztsnr": (0,)})
    assert info.prediction == "v" and info.sampling_options == {"zsnr": True}
    with pytest.raises(detect.UnsupportedModel, match="EDM"):
        detect.detect_checkpoint({**shapes, "edm_mean": (1, 4, 1, 1), "edm_std": (1, 4, 1, 1)})


def test_video_models_with_temporal_layers_are_not_taken_for_image_models():
    shapes = {f"model.diffusion_model.{k}": tuple(v.shape) for k, v in tiny_unet("sd1").state_dict().items()}
    shapes["model.diffusion_model.input_blocks.1.1.time_stack.0.norm1.weight"] = (32,)
    with pytest.raises(detect.UnknownModelFile, match="Could not detect model type"):
        detect.detect_checkpoint(shapes)


@pytest.mark.parametrize("shapes,kind", [
    ({"encoder.conv_in.weight": (128, 3, 3, 3), "decoder.conv_in.weight": (512, 4, 3, 3)}, "vae"),
    ({"decoder.up_blocks.0.resnets.0.norm1.weight": (512,), "encoder.conv_in.weight": (128, 3, 3, 3),
      "decoder.conv_in.weight": (512, 4, 3, 3)}, "vae"),
    ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": (320, 4, 1, 1)}, "lora"),
    ({"unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": (4, 320)}, "lora"),
    ({"lycoris_foo.hada_w1_a": (320, 4)}, "lora"),
    ({"string_to_param.*": (2, 768), "string_to_token.*": (1,)}, "embedding"),
    ({"emb_params": (3, 1024)}, "embedding"),
    ({"clip_l": (2, 768), "clip_g": (2, 1280)}, "embedding"),
    ({"<cat-toy>": (768,)}, "embedding"),
    ({"model.0.weight": (64, 3, 3, 3), "model.1.sub.0.RDB1.conv1.0.weight": (32, 64, 3, 3)}, "upscale"),
    ({"conv_first.weight": (64, 3, 3, 3), "body.0.rdb1.conv1.weight": (32, 64, 3, 3),
      "conv_last.weight": (3, 64, 3, 3)}, "upscale"),
    ({"body.0.in_conv.weight": (80, 192, 1, 1)}, "t2i_adapter"),
    ({"conv_in.weight": (320, 192, 3, 3), "body.0.block1.weight": (320, 320, 3, 3)}, "t2i_adapter"),
    ({"zero_convs.0.0.weight": (320, 320, 1, 1)}, "controlnet"),
    ({"controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3)}, "controlnet"),
    ({"input_blocks.0.0.weight": (320, 4, 3, 3), "out.2.weight": (4, 320, 3, 3)}, "unet"),
])
def test_standalone_model_files_are_recognised_by_their_keys(shapes, kind):
    assert detect.file_kind(shapes) == kind


def test_an_unknown_file_is_refused_with_a_summary_of_what_it_contains():
    shapes = {"foo.bar.weight": (3, 3), "foo.bar.bias": (3,), "baz": ()}
    with pytest.raises(detect.UnknownModelFile) as err:
        detect.file_kind(shapes)
    message = str(err.value)
    assert "3 tensors" in message and "foo.bar.* (2)" in message and "baz" in message


def test_a_full_size_sdxl_refiner_unet_is_detected_as_the_refiner():
    from diffusion.models.unet import UNetModel

    with torch.device("meta"):
        unet = UNetModel(**configs.SDXL_REFINER)
    shapes = {f"model.diffusion_model.{k}": tuple(v.shape) for k, v in unet.state_dict().items()}
    info = detect.detect_checkpoint(shapes)
    assert info.family == "sdxl_refiner" and info.unet_config == configs.SDXL_REFINER
