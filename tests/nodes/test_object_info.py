"""Every built-in node's /object_info entry matches nodes.md (transcribed in fixtures/object_info)."""

import json
import os
from pathlib import Path

import pytest

from engine.paths import Paths
from engine.registry import Registry

FIXTURE = json.loads((Path(__file__).parents[1] / "fixtures" / "object_info" / "core_nodes.json").read_text())
EXPECTED = FIXTURE["nodes"]

# The nodes of this layer (issue 6, core part); the rest of the fixture is checked once registered.
CORE = """CheckpointLoaderSimple VAELoader CLIPLoader DualCLIPLoader UNETLoader CLIPTextEncode
CLIPTextEncodeSDXL CLIPTextEncodeSDXLRefiner CLIPSetLastLayer ConditioningCombine ConditioningConcat
ConditioningAverage ConditioningSetArea ConditioningSetAreaPercentage ConditioningSetAreaStrength
ConditioningSetMask ConditioningSetTimestepRange ConditioningZeroOut VAEDecode VAEEncode VAEDecodeTiled
VAEEncodeTiled VAEEncodeForInpaint InpaintModelConditioning EmptyLatentImage LatentUpscale LatentUpscaleBy
LatentComposite LatentCompositeMasked LatentBlend LatentFromBatch RepeatLatentBatch LatentBatch LatentRotate
LatentFlip LatentCrop SetLatentNoiseMask SaveLatent LoadLatent LoadImage LoadImageMask SaveImage PreviewImage
ImageScale ImageScaleBy ImageScaleToTotalPixels ImageInvert ImageBatch ImagePadForOutpaint ImageCrop
ImageBlend ImageBlur ImageSharpen Canny EmptyImage ImageToMask MaskToImage SolidMask InvertMask GrowMask
FeatherMask ThresholdMask""".split()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A registry over a base folder with one file in every model folder and a few input files."""
    base = tmp_path_factory.mktemp("base")
    paths = Paths(str(base))
    for folder in ("checkpoints", "vae", "text_encoders", "diffusion_models", "loras", "controlnet",
                   "upscale_models", "hypernetworks"):
        d = paths.folder_paths(folder)[0]
        os.makedirs(d, exist_ok=True)
        open(os.path.join(d, f"{folder}_model.safetensors"), "wb").close()
    os.makedirs(paths.input_dir)
    for name in ("photo.png", "notes.txt", "saved.latent"):
        open(os.path.join(paths.input_dir, name), "wb").close()
    registry = Registry(paths)
    registry.load_builtins()
    return registry, paths


def resolve(value, paths, actual):
    """Replace the fixture's placeholders ($files, $input, $contains) with what this base folder implies."""
    if isinstance(value, dict) and "$files" in value:
        return paths.list_files(value["$files"])
    if isinstance(value, dict) and "$input" in value:
        return {"images": ["photo.png"], "all": ["notes.txt", "photo.png", "saved.latent"],
                "latent": ["saved.latent"]}[value["$input"]]
    if isinstance(value, dict) and "$contains" in value:
        assert set(value["$contains"]) <= set(actual), f"{actual} lacks {value['$contains']}"
        return actual
    if isinstance(value, dict):
        return {k: resolve(v, paths, actual.get(k) if isinstance(actual, dict) else None)
                for k, v in value.items()}
    if isinstance(value, list):
        acts = actual if isinstance(actual, list) and len(actual) == len(value) else [None] * len(value)
        return [resolve(v, paths, a) for v, a in zip(value, acts)]
    return value


def test_every_core_node_of_this_layer_is_registered(env):
    registry, _ = env
    missing = [n for n in CORE if n not in registry]
    assert not missing


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_object_info_entry_matches_nodes_md(env, name):
    registry, paths = env
    if name not in registry:
        pytest.skip(f"{name} is not implemented yet (another layer)")
    actual = registry.node_info(name)
    expected = {k: v for k, v in EXPECTED[name].items() if not k.startswith("$")}
    if name == "VAELoader":  # model files plus the TAE/pixel_space entries Kiln can load
        choices = actual["input"]["required"]["vae_name"][0]
        assert choices[:1] == ["vae_model.safetensors"]
        expected["input"]["required"]["vae_name"][0] = choices
    expected = resolve(expected, paths, actual)
    for key in expected:
        assert actual[key] == expected[key], key
    assert list(actual["input"]) == list(expected["input"])
    for category, names in expected["input_order"].items():
        assert list(actual["input"][category]) == names
    # ComfyUI defines output tooltips for a few nodes; Kiln sends one string per output for those
    # (execution.md §12.3) and omits the key elsewhere.
    if EXPECTED[name].get("$output_tooltips"):
        assert len(actual["output_tooltips"]) == len(actual["output"]) and all(actual["output_tooltips"])
    else:
        assert "output_tooltips" not in actual
    if EXPECTED[name].get("$described"):
        assert actual["description"]
    assert ("deprecated" in actual) == ("deprecated" in expected)
