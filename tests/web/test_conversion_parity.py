"""The editor's JavaScript converter and the CLI's Python converter give the same API prompt (workflows.md §3)."""

import copy
import json
import shutil
import subprocess

import pytest

from webtools import ROOT, fixture_json

workflow = pytest.importorskip("engine.workflow")

CONVERT_JS = """
import { workflowToPrompt } from "./web/js/prompt.js";
let text = "";
process.stdin.on("data", (d) => (text += d));
process.stdin.on("end", () => {
  const { workflows, defs } = JSON.parse(text);
  process.stdout.write(JSON.stringify(workflows.map((wf) => workflowToPrompt(wf, defs))));
});
"""


def variants():
    """The default workflow with each conversion rule exercised once."""
    base = fixture_json("default_workflow.json")
    out = {"default": base}
    muted = copy.deepcopy(base)
    next(n for n in muted["nodes"] if n["id"] == 5)["mode"] = 2
    out["muted latent"] = muted
    bypass = copy.deepcopy(base)
    bypass["nodes"].append({"id": 10, "type": "ImageInvert", "pos": [0, 0], "size": [200, 50], "flags": {}, "order": 7, "mode": 4,
                            "inputs": [{"name": "image", "type": "IMAGE", "link": 9}],
                            "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [10]}], "properties": {}, "widgets_values": []})
    bypass["links"] = [l for l in bypass["links"] if l[0] != 9] + [[9, 8, 0, 10, 0, "IMAGE"], [10, 10, 0, 9, 0, "IMAGE"]]
    next(n for n in bypass["nodes"] if n["id"] == 9)["inputs"][0]["link"] = 10
    out["bypassed invert"] = bypass
    reroute = copy.deepcopy(base)
    reroute["nodes"].append({"id": 11, "type": "Reroute", "pos": [0, 0], "size": [75, 26], "flags": {}, "order": 7, "mode": 0,
                             "inputs": [{"name": "", "type": "*", "link": 8}],
                             "outputs": [{"name": "", "type": "VAE", "links": [11]}], "properties": {}})
    reroute["links"] = [l for l in reroute["links"] if l[0] != 8] + [[8, 4, 2, 11, 0, "VAE"], [11, 11, 0, 8, 1, "VAE"]]
    next(n for n in reroute["nodes"] if n["id"] == 8)["inputs"][1]["link"] = 11
    out["reroute"] = reroute
    primitive = copy.deepcopy(base)
    ks = next(n for n in primitive["nodes"] if n["id"] == 3)
    ks["inputs"].append({"name": "steps", "type": "INT", "link": 12, "widget": {"name": "steps"}})
    primitive["nodes"].append({"id": 12, "type": "PrimitiveNode", "pos": [0, 0], "size": [200, 80], "flags": {}, "order": 0, "mode": 0,
                               "inputs": [], "outputs": [{"name": "INT", "type": "INT", "links": [12], "widget": {"name": "steps"}}],
                               "properties": {}, "widgets_values": [7, "fixed"]})
    primitive["links"].append([12, 12, 0, 3, 4, "INT"])
    out["primitive"] = primitive
    short = copy.deepcopy(base)
    next(n for n in short["nodes"] if n["id"] == 5)["widgets_values"] = [768]
    out["missing values"] = short
    sub = copy.deepcopy(base)
    io = lambda name, type_: {"id": name, "name": name, "type": type_, "linkIds": []}  # noqa: E731
    decode = next(n for n in sub["nodes"] if n["id"] == 8)
    inner = {**copy.deepcopy(decode), "id": 1}
    inner["inputs"][0]["link"], inner["inputs"][1]["link"], inner["outputs"][0]["links"] = 1, 2, [3]
    sub["definitions"] = {"subgraphs": [{
        "id": "sg", "version": 1, "name": "Decode", "nodes": [inner], "groups": [], "config": {}, "extra": {},
        "inputs": [io("samples", "LATENT"), io("vae", "VAE")], "outputs": [io("image", "IMAGE")],
        "links": [{"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0, "type": "LATENT"},
                  {"id": 2, "origin_id": -10, "origin_slot": 1, "target_id": 1, "target_slot": 1, "type": "VAE"},
                  {"id": 3, "origin_id": 1, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "IMAGE"}]}]}
    decode["type"] = "sg"
    out["subgraph"] = sub
    return out


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_the_javascript_and_python_converters_agree():
    defs = fixture_json("object_info.json")
    cases = variants()
    proc = subprocess.run(["node", "--input-type=module", "-e", CONVERT_JS], cwd=ROOT, check=True, capture_output=True,
                          input=json.dumps({"workflows": list(cases.values()), "defs": defs}), text=True, timeout=60)
    for (name, wf), js in zip(cases.items(), json.loads(proc.stdout)):
        assert js == workflow.editor_to_api(copy.deepcopy(wf), defs), name


ROUNDTRIP_JS = """
import { Graph } from "./web/js/graph.js";
let text = "";
process.stdin.on("data", (d) => (text += d));
process.stdin.on("end", () => {
  const { workflows, defs } = JSON.parse(text);
  process.stdout.write(JSON.stringify(workflows.map((wf) => { const g = new Graph(defs); g.configure(wf); return g.serialize(); })));
});
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_every_shipped_workflow_loads_resaves_unchanged_and_converts_like_the_cli(tmp_path):
    from engine.config import RuntimeConfig
    from engine.paths import Paths
    from engine.registry import build_registry

    config = RuntimeConfig(base_directory=str(ROOT), output_directory=str(tmp_path), temp_directory=str(tmp_path))
    defs = build_registry(Paths.from_config(config), custom_nodes=False).object_info()
    shipped = {p.stem: json.loads(p.read_text()) for p in sorted((ROOT / "workflows").glob("*.json"))}
    if not shipped:
        pytest.skip("no shipped workflows in workflows/ yet")
    payload = json.dumps({"workflows": list(shipped.values()), "defs": defs})
    saved = subprocess.run(["node", "--input-type=module", "-e", ROUNDTRIP_JS], cwd=ROOT, check=True, capture_output=True,
                           input=payload, text=True, timeout=60)
    converted = subprocess.run(["node", "--input-type=module", "-e", CONVERT_JS], cwd=ROOT, check=True, capture_output=True,
                               input=payload, text=True, timeout=60)
    # `order` is informational and the editor recomputes it (a topological order) on every save.
    unordered = lambda doc: {**doc, "nodes": [{k: v for k, v in n.items() if k != "order"} for n in doc["nodes"]]}  # noqa: E731
    for (name, wf), resaved, js in zip(shipped.items(), json.loads(saved.stdout), json.loads(converted.stdout)):
        assert unordered(resaved) == unordered(wf), f"{name} changes when the editor opens and saves it"
        assert js == workflow.editor_to_api(copy.deepcopy(wf), defs), name
