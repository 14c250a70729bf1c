"""Every shipped workflow is a valid editor file that the engine converts, validates and runs on the demo model."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.config import RuntimeConfig
from engine.executor import Executor
from engine.paths import Paths
from engine.registry import build_registry
from engine.validate import validate_prompt
from engine.workflow import editor_to_api, is_editor_workflow

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    config = RuntimeConfig(base_directory=str(ROOT), output_directory=str(out),
                           temp_directory=str(tmp_path_factory.mktemp("temp")))
    paths = Paths.from_config(config)
    registry = build_registry(paths, custom_nodes=False)
    return registry, Executor(registry, paths=paths, config=config), out


def _run(engine, name: str) -> tuple[dict, list[np.ndarray]]:
    registry, executor, out = engine
    workflow = json.loads((ROOT / "workflows" / name).read_text())
    prompt = editor_to_api(workflow, registry.object_info())
    result = executor.run(f"test-{name}", prompt, extra_data={"extra_pnginfo": {"workflow": workflow}},
                          outputs=validate_prompt(registry, prompt).outputs, emit=lambda *_: None)
    assert result.status == "success", result.messages
    assert not result.warnings  # e.g. LoraLoader's keys that matched no weight
    saved = [o for node in result.outputs.values() for o in node.get("images", []) if o["type"] == "output"]
    return prompt, [np.asarray(Image.open(out / s["subfolder"] / s["filename"]).convert("RGB")) for s in saved]


def test_the_shipped_workflows_include_the_default_the_editor_opens():
    assert {"default", "img2img", "inpainting", "hires_fix", "lora", "controlnet"} <= {p.stem for p in WORKFLOWS}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_shipped_workflow_is_an_editor_file_that_validates(engine, path):
    registry, _, _ = engine
    workflow = json.loads(path.read_text())
    assert is_editor_workflow(workflow) and workflow["version"] == 0.4
    for link in workflow["links"]:  # slots and link ids agree on both ends, as the editor expects
        link_id, src, src_slot, dst, dst_slot, _ = link
        nodes = {n["id"]: n for n in workflow["nodes"]}
        assert link_id in nodes[src]["outputs"][src_slot]["links"]
        assert nodes[dst]["inputs"][dst_slot]["link"] == link_id
    prompt = editor_to_api(workflow, registry.object_info())
    result = validate_prompt(registry, prompt)
    assert result.ok, (result.error, result.node_errors)
    assert any(n["class_type"] == "CheckpointLoaderSimple" and n["inputs"]["ckpt_name"] ==
               "kiln-demo-shapes.safetensors" for n in prompt.values())


EXPECTED = {"default": (4, 64), "img2img": (1, 64), "inpainting": (1, 64), "hires_fix": (1, 128), "lora": (2, 64),
            "controlnet": (1, 64)}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_workflow_runs_on_the_demo_model_and_saves_its_pictures(engine, name):
    _, images = _run(engine, f"{name}.json")
    count, size = EXPECTED[name]
    assert [im.shape for im in images] == [(size, size, 3)] * count
    assert all(im.std() > 5 for im in images)  # a picture, not a flat fill
