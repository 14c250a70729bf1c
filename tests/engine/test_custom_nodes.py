"""V1 packs from a custom_nodes folder: loading, shims, progress, failure isolation, object_info shape."""
from __future__ import annotations

import json
import textwrap

import pytest

from engine.executor import Executor
from engine.paths import Paths
from engine.registry import Registry, build_registry
from engine.validate import validate_prompt

PACK = '''
import folder_paths
import comfy.utils
import nodes
from server import PromptServer
from comfy_execution.graph_utils import GraphBuilder

@PromptServer.instance.routes.get("/kiln_test_pack/hello")
async def hello(request):
    return None

class ListCheckpoints:
    CATEGORY = "tests"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("names",)
    FUNCTION = "run"
    OUTPUT_NODE = True
    DESCRIPTION = "Lists checkpoints through folder_paths."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": (folder_paths.get_filename_list("checkpoints"),),
                             "steps": ("INT", {"default": 3, "min": 1, "max": nodes.MAX_RESOLUTION})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    def run(self, ckpt_name, steps, unique_id):
        bar = comfy.utils.ProgressBar(steps)
        for _ in range(steps):
            bar.update(1)
        path = folder_paths.get_full_path_or_raise("checkpoints", ckpt_name)
        return {"ui": {"text": [path, unique_id]}, "result": (ckpt_name,)}

class Mirror:
    CATEGORY = "tests"
    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    NOT_IDEMPOTENT = True
    OUTPUT_TOOLTIPS = ("the same text",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"forceInput": True})}}

    def run(self, text):
        return (text,)

NODE_CLASS_MAPPINGS = {"TestListCheckpoints": ListCheckpoints, "TestMirror": Mirror, "TestConst": Mirror}
NODE_DISPLAY_NAME_MAPPINGS = {"TestListCheckpoints": "List checkpoints"}
WEB_DIRECTORY = "web"
'''


@pytest.fixture
def pack_dirs(tmp_path):
    base = tmp_path / "kiln"
    (base / "models" / "checkpoints" / "sub").mkdir(parents=True)
    (base / "models" / "checkpoints" / "sub" / "b.safetensors").write_bytes(b"x")
    (base / "models" / "checkpoints" / "a.ckpt").write_bytes(b"x")
    (base / "models" / "checkpoints" / "notes.txt").write_text("not a model")
    cn = base / "custom_nodes"
    (cn / "good_pack" / "web").mkdir(parents=True)
    (cn / "good_pack" / "__init__.py").write_text("from .impl import *\n")
    (cn / "good_pack" / "impl.py").write_text(PACK)
    (cn / "good_pack" / "web" / "ext.js").write_text("// ext")
    (cn / "bad_import").mkdir()
    (cn / "bad_import" / "__init__.py").write_text(textwrap.dedent('''
        from server import PromptServer
        @PromptServer.instance.routes.post("/bad/route")
        async def r(request):
            return None
        raise RuntimeError("boom")
    '''))
    (cn / "missing_dep.py").write_text("import nonexistent_module_for_kiln_tests\n")
    (cn / "exits.py").write_text("import sys\nsys.exit(1)\n")
    (cn / "old.disabled").mkdir()
    return base


def load(base, registry_fixture=None) -> Registry:
    from enginetest_nodes import ALL

    reg = Registry(Paths(str(base)))
    for fn in ALL:
        reg.add(fn.spec, core=True)
    reg.load_custom_nodes()
    return reg


def test_a_v1_pack_loads_and_broken_packs_are_skipped_with_their_traceback(pack_dirs):
    reg = load(pack_dirs)
    status = {p.name: p.ok for p in reg.packs}
    assert status == {"bad_import": False, "exits": False, "good_pack": True, "missing_dep": False}
    assert "RuntimeError: boom" in next(p.error for p in reg.packs if p.name == "bad_import")
    assert "TestListCheckpoints" in reg and "TestMirror" in reg
    assert [p.name for p in reg.failed_packs()] == ["bad_import", "exits", "missing_dep"]


def test_a_pack_cannot_replace_a_core_node(pack_dirs):
    reg = load(pack_dirs)
    assert reg.get("TestConst").v1_class is None


def test_routes_of_a_failed_pack_are_discarded_and_good_ones_kept(pack_dirs):
    reg = load(pack_dirs)
    paths = [(m, p) for m, p, *_ in reg.bridge.committed_routes()]
    assert paths == [("GET", "/kiln_test_pack/hello")]


def test_web_directory_is_registered_under_the_pack_name(pack_dirs):
    reg = load(pack_dirs)
    assert reg.web_directories == {"good_pack": str(pack_dirs / "custom_nodes" / "good_pack" / "web")}


def test_object_info_of_a_v1_node_has_the_v1_shape_with_file_lists(pack_dirs):
    reg = load(pack_dirs)
    info = json.loads(json.dumps(reg.object_info("TestListCheckpoints")))["TestListCheckpoints"]
    assert list(info) == ["input", "input_order", "output", "output_is_list", "output_name", "name",
                          "display_name", "description", "python_module", "category", "output_node"]
    assert info["input"]["required"]["ckpt_name"] == [["a.ckpt", "sub/b.safetensors"]]
    assert info["input"]["hidden"] == {"unique_id": "UNIQUE_ID"}
    assert info["input_order"] == {"required": ["ckpt_name", "steps"], "hidden": ["unique_id"]}
    assert info["output_name"] == ["names"] and info["display_name"] == "List checkpoints"
    assert info["python_module"] == "custom_nodes.good_pack" and info["output_node"] is True
    mirror = reg.object_info("TestMirror")["TestMirror"]
    assert mirror["output_tooltips"] == ["the same text"] and mirror["display_name"] == "TestMirror"
    assert reg.object_info("Nope") == {}


def test_a_v1_node_runs_with_folder_paths_and_reports_progress_through_progressbar(pack_dirs):
    reg = load(pack_dirs)
    prompt = {"7": {"class_type": "TestListCheckpoints", "inputs": {"ckpt_name": "sub/b.safetensors", "steps": 3}}}
    assert validate_prompt(reg, prompt).ok
    events = []
    result = Executor(reg).run("p", prompt, emit=lambda e, d: events.append((e, d)))
    assert result.status == "success", result.error
    expected = str(pack_dirs / "models" / "checkpoints" / "sub" / "b.safetensors")
    assert result.outputs["7"] == {"text": [expected, "7"]}
    assert [(d["value"], d["max"], d["node"]) for e, d in events if e == "progress"] == [(1, 3, "7"), (2, 3, "7"),
                                                                                      (3, 3, "7")]


def test_a_model_name_outside_the_listing_is_not_in_list(pack_dirs):
    reg = load(pack_dirs)
    for bad in ("../../secret.safetensors", "/etc/passwd", "notes.txt"):
        r = validate_prompt(reg, {"1": {"class_type": "TestListCheckpoints", "inputs": {"ckpt_name": bad, "steps": 1}}})
        assert r.node_errors["1"]["errors"][0]["type"] == "value_not_in_list"


def test_the_shipped_example_pack_loads_and_inverts(tmp_path):
    import os

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    reg = build_registry(Paths(str(tmp_path)), builtins=False,
                         custom_node_dirs=[os.path.join(repo, "custom_nodes")])
    assert "KilnExampleInvert" in reg and "example_pack" in reg.web_directories
    info = reg.object_info("KilnExampleInvert")["KilnExampleInvert"]
    assert info["input"] == {"required": {"image": ["IMAGE"], "amount": ["FLOAT", {"default": 1.0, "min": 0.0,
                                                                                    "max": 1.0, "step": 0.01}]}}
    prompt = {"1": {"class_type": "KilnExampleRepeatText", "inputs": {"text": "hi", "times": 2}}}
    assert Executor(reg).run("p", prompt).outputs["1"]["text"] == ["hi hi"]


def test_a_pyproject_web_entry_registers_the_web_directory_under_the_project_name(tmp_path):
    pack = tmp_path / "custom_nodes" / "pp_pack"
    (pack / "js").mkdir(parents=True)
    (pack / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {}\n")
    (pack / "pyproject.toml").write_text('[project]\nname = "fancy-pack"\n[tool.comfy]\nweb = "js"\n')
    reg = Registry(Paths(str(tmp_path)))
    reg.load_custom_nodes()
    assert reg.web_directories == {"fancy-pack": str(pack / "js")}


def test_a_v3_only_pack_is_skipped_with_a_clear_reason(tmp_path):
    pack = tmp_path / "custom_nodes" / "v3_pack"
    pack.mkdir(parents=True)
    (pack / "__init__.py").write_text("async def comfy_entrypoint():\n    return None\n")
    reg = Registry(Paths(str(tmp_path)))
    (result,) = reg.load_custom_nodes()
    assert not result.ok and result.error == "v3_pack: V3 node API is not supported"


def test_disable_all_custom_nodes_keeps_only_whitelisted_packs(pack_dirs):
    reg = Registry(Paths(str(pack_dirs)))
    reg.load_custom_nodes(disable_all=True, whitelist=["good_pack"])
    assert [p.name for p in reg.packs] == ["good_pack"]


def test_a_node_whose_input_types_raises_is_left_out_of_object_info_and_fails_validation(tmp_path):
    from engine.compat_v1 import spec_from_class

    class Broken:
        RETURN_TYPES = ()
        FUNCTION = "run"
        OUTPUT_NODE = True

        @classmethod
        def INPUT_TYPES(cls):
            raise RuntimeError("no inputs today")

    reg = Registry(Paths(str(tmp_path)))
    reg.add(spec_from_class("Broken", Broken))
    assert reg.object_info() == {}
    r = validate_prompt(reg, {"1": {"class_type": "Broken", "inputs": {}}})
    (err,) = r.node_errors["1"]["errors"]
    assert err["type"] == "exception_during_validation" and err["details"] == "no inputs today"
    assert err["extra_info"]["exception_type"] == "RuntimeError"
    assert r.error["details"] == "Exception when validating node: no inputs today"


def test_a_node_with_unserializable_input_types_is_left_out_of_object_info(tmp_path):
    from engine.compat_v1 import spec_from_class

    class Odd:
        RETURN_TYPES = ()
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"thing": (object(),)}}

    class Fine(Odd):
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}}

    reg = Registry(Paths(str(tmp_path)))
    reg.add(spec_from_class("Odd", Odd))
    reg.add(spec_from_class("Fine", Fine))
    assert list(reg.object_info()) == ["Fine"]
