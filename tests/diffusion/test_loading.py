"""Loading checkpoints and standalone files: round trips, dtypes, weights-only pickles, cache, errors."""
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from diffusion import detect, loading, memory
from diffusion.devices import RuntimeOptions
from diffusion.keymaps.clip import to_checkpoint
from diffusion.models.text_encoders import build_encoder, tiny_config
from tests.diffusion.tiny_models import checkpoint_dict, tiny_controlnet, tiny_unet, tiny_vae, unet_inputs, \
    write_checkpoint

FP32 = RuntimeOptions(force_fp32=True)


@pytest.fixture(autouse=True)
def _fresh_cache():
    loading.clear_cache()
    yield
    loading.clear_cache()


def _outputs(unet, family):
    x, t, ctx, y = unet_inputs(family)
    with torch.no_grad():
        return unet(x, t, ctx, y=y)


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_tiny_single_file_checkpoints_load_back_and_give_identical_outputs(tmp_path, family):
    unet, vae = tiny_unet(family), tiny_vae()
    path = tmp_path / f"tiny_{family}.safetensors"
    write_checkpoint(path, unet, vae)
    model, clip, vae_handle = loading.load_checkpoint(path, config=FP32)
    assert model.family == family and clip is None
    # random norm biases have std 0.1 > 0.09, which reads as an SD2 768-v model (checkpoints.md §5)
    assert model.prediction == ("v" if family == "sd2" else "eps")
    with model.active("cpu", torch.float32) as loaded:
        assert torch.equal(_outputs(loaded, family), _outputs(unet, family))
    z = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        expected = ((vae.decode(z) + 1) / 2).clamp(0, 1).movedim(1, -1)
    assert torch.equal(vae_handle.decode(z), expected)
    assert vae_handle.latent_format.scale_factor == (0.13025 if family == "sdxl" else 0.18215)


def test_a_checkpoint_with_a_text_encoder_returns_a_clip_handle(tmp_path):
    encoder = build_encoder(tiny_config("sd1"), dtype=torch.float32)
    path = tmp_path / "with_clip.safetensors"
    write_checkpoint(path, tiny_unet("sd1"), tiny_vae(), extra=to_checkpoint({"clip_l": encoder.hf_state_dict()}, "sd1"))
    _model, clip, _vae = loading.load_checkpoint(path)
    assert clip is not None


def test_fp16_files_stay_fp16_in_memory_unless_fp32_is_forced(tmp_path):
    path = tmp_path / "half.safetensors"
    write_checkpoint(path, tiny_unet("sd1"), tiny_vae(), dtype=torch.float16)
    model, _, vae = loading.load_checkpoint(path)
    assert {p.dtype for p in model.unet.parameters()} == {torch.float16}
    assert {p.dtype for p in vae.model.parameters()} == {torch.float16} and vae.dtype == torch.float32
    forced, _, forced_vae = loading.load_checkpoint(path, config=FP32)
    assert {p.dtype for p in forced.unet.parameters()} == {torch.float32}
    assert forced.compute_dtype == torch.float32
    assert {p.dtype for p in forced_vae.model.parameters()} == {torch.float32}


def test_safetensors_weights_are_the_file_mapping_not_a_copy(tmp_path):
    path = tmp_path / "mapped.safetensors"
    write_checkpoint(path, tiny_unet("sd1"), None)
    model, _, vae = loading.load_checkpoint(path)
    assert vae is None
    weight = model.unet.input_blocks[0][0].weight
    maps = open("/proc/self/maps").read().splitlines()
    mapped = [tuple(int(a, 16) for a in line.split()[0].split("-")) for line in maps if line.endswith(str(path))]
    assert any(lo <= weight.data_ptr() < hi for lo, hi in mapped)


def test_ckpt_files_load_weights_only_and_are_unwrapped_from_state_dict(tmp_path):
    unet = tiny_unet("sd1")
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": checkpoint_dict(unet, tiny_vae()), "global_step": 10}, path)
    model, _, vae = loading.load_checkpoint(path, config=FP32)
    with model.active() as loaded:
        assert torch.equal(_outputs(loaded, "sd1"), _outputs(unet, "sd1"))
    assert vae is not None


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickles_that_need_code_are_refused_with_a_clear_error(tmp_path):
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"x": Payload()}}, f)
    with pytest.raises(loading.UnsafeCheckpoint, match="refusing to load evil.ckpt"):
        loading.load_checkpoint(path)
    zipped = tmp_path / "evil_zip.pt"
    torch.save({"state_dict": {"x": Payload()}}, zipped)
    with pytest.raises(loading.UnsafeCheckpoint, match="weights_only"):
        loading.read_state_dict(zipped)


def test_loading_a_non_checkpoint_as_a_checkpoint_says_what_the_file_is(tmp_path):
    path = tmp_path / "vae.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_vae().state_dict().items()}, str(path))
    with pytest.raises(detect.UnknownModelFile, match="is a vae file"):
        loading.load_checkpoint(path)
    junk = tmp_path / "junk.safetensors"
    save_file({"something.else": torch.zeros(2)}, str(junk))
    with pytest.raises(detect.UnknownModelFile, match="something.else"):
        loading.load_checkpoint(junk)


def test_loaded_models_are_cached_until_the_file_changes_or_everything_is_freed(tmp_path):
    path = tmp_path / "cached.safetensors"
    write_checkpoint(path, tiny_unet("sd1"), tiny_vae())
    first, _, vae1 = loading.load_checkpoint(path)
    second, _, vae2 = loading.load_checkpoint(path)
    assert first.unet is second.unet and vae1 is vae2 and first is not second
    write_checkpoint(path, tiny_unet("sd1", seed=7), tiny_vae())
    os.utime(path, ns=(1, 1))
    third, _, _ = loading.load_checkpoint(path)
    assert third.unet is not first.unet
    memory.free_all()
    assert loading.load_checkpoint(path)[0].unet is not third.unet


def test_patches_on_a_loaded_model_do_not_leak_into_the_next_load(tmp_path):
    path = tmp_path / "p.safetensors"
    write_checkpoint(path, tiny_unet("sd1"), None)

    class Zero:
        def apply(self, weight, strength):
            return weight * 0

    model, _, _ = loading.load_checkpoint(path)
    model.add_patches({"out.2.weight": Zero()}, 1.0)
    assert loading.load_checkpoint(path)[0].patches == {}


def test_standalone_vae_files_load_in_ldm_and_prefixed_layouts(tmp_path):
    vae = tiny_vae()
    plain, prefixed = tmp_path / "vae.safetensors", tmp_path / "vae_prefixed.pt"
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(plain))
    torch.save({"state_dict": {f"first_stage_model.{k}": v for k, v in vae.state_dict().items()}}, prefixed)
    z = torch.randn(1, 4, 3, 3, generator=torch.Generator().manual_seed(4))
    a = loading.load_vae(plain, config=FP32, family="sdxl")
    b = loading.load_vae(prefixed, config=FP32)
    assert torch.equal(a.decode(z), b.decode(z))
    assert a.latent_format.name == "sdxl" and b.latent_format.name == "sd15"


def test_bare_unet_files_load_with_the_unet_loader(tmp_path):
    unet = tiny_unet("sdxl")
    path = tmp_path / "unet.safetensors"
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, str(path))
    model = loading.load_unet(path, config=FP32)
    assert model.family == "sdxl"
    with model.active() as loaded:
        assert torch.equal(_outputs(loaded, "sdxl"), _outputs(unet, "sdxl"))


def test_controlnet_files_load_and_their_residuals_fit_the_unet(tmp_path):
    cn = tiny_controlnet()
    path = tmp_path / "control_tiny_shuffle.safetensors"
    save_file({f"control_model.{k}": v.contiguous() for k, v in cn.state_dict().items()}, str(path))
    control = loading.load_controlnet(path, config=FP32)
    assert control.kind == "controlnet" and control.family == "sd1" and control.global_average_pooling
    unet = tiny_unet("sd1")
    x, t, ctx, _ = unet_inputs("sd1", size=8)
    hint = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        residuals = control.model(x, hint, t, ctx)
        assert torch.equal(residuals["output"][-1], cn(x, hint, t, ctx)["output"][-1])
        assert len(residuals["output"]) == len(unet.input_blocks)
        out = unet(x, t, ctx, control=residuals)
    assert out.shape == x.shape and not torch.allclose(out, unet(x, t, ctx))


@pytest.mark.parametrize("light", [False, True])
def test_t2i_adapter_files_load_and_give_one_feature_map_per_unet_level(tmp_path, light):
    from diffusion.models.controlnet import T2IAdapter, T2IAdapterLight
    from tests.diffusion.tiny_models import seeded

    channels = [32, 64, 128, 128]
    if light:
        adapter = T2IAdapterLight(cin=192, channels=channels, nums_rb=1)
    else:
        blocks = [{"has_in_conv": i in (2, 4), "has_skep": False} for i in range(8)]
        adapter = T2IAdapter(cin=192, channels=channels, nums_rb=2, ksize=1, use_conv=False, blocks=blocks)
    seeded(adapter, 3)
    path = tmp_path / "t2iadapter_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in adapter.state_dict().items()}, str(path))
    control = loading.load_controlnet(path, config=FP32)
    assert control.kind == "t2i_adapter" and type(control.model) is type(adapter)
    hint = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features, expected = control.model(hint), adapter(hint)
    assert [f.shape[1:] for f in features] == [(32, 16, 16), (64, 8, 8), (128, 4, 4), (128, 2, 2)]
    assert all(torch.equal(a, b) for a, b in zip(features, expected))


def test_legacy_non_zip_torch_files_still_load_weights_only(tmp_path):
    unet = tiny_unet("sd1")
    path = tmp_path / "legacy.ckpt"
    torch.save(checkpoint_dict(unet, None), path, _use_new_zipfile_serialization=False)
    model, _, _ = loading.load_checkpoint(path, config=FP32)
    with model.active() as loaded:
        assert torch.equal(_outputs(loaded, "sd1"), _outputs(unet, "sd1"))


def test_the_unet_loader_can_store_weights_in_fp8_and_compute_in_another_dtype(tmp_path):
    unet = tiny_unet("sd1")
    path = tmp_path / "unet.safetensors"
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, str(path))
    model = loading.load_unet(path, weight_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    assert {p.dtype for p in model.unet.parameters()} == {torch.float8_e4m3fn}
    assert model.compute_dtype == torch.float32
    with model.active() as loaded:
        out = _outputs(loaded, "sd1")
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out - _outputs(unet, "sd1")).abs().mean() < 0.2 * _outputs(unet, "sd1").abs().mean()
    assert loading.load_unet(path).unet is not model.unet  # a different storage dtype is a different entry


def test_file_kinds_are_told_apart_for_files_on_disk_including_nested_a1111_embeddings(tmp_path):
    embedding = tmp_path / "style.pt"
    torch.save({"string_to_token": {"*": torch.tensor(265)}, "string_to_param": {"*": torch.zeros(2, 768)},
                "name": "style", "step": 100}, embedding)
    assert detect.file_kind(loading.shapes_of(loading.read_state_dict(embedding))) == "embedding"
