"""main.py commands (run, validate, nodes) against the test nodes, in-process so torch stays unloaded."""
from __future__ import annotations

import json

import pytest

import main
from enginetest_nodes import chain


@pytest.fixture
def cli(registry, monkeypatch, tmp_path):
    monkeypatch.setattr(main, "_registry", lambda config, custom_nodes=True: registry)

    def run(*argv):
        return main.main(list(argv))

    return run


def write(tmp_path, name, data) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def test_run_executes_an_api_workflow_with_set_overrides(cli, tmp_path, capsys, calls):
    path = write(tmp_path, "api.json", chain(1))
    assert cli("run", path, "--set", "1.value=5", "--set", "2.value=\"20\"") == 0
    out, err = capsys.readouterr()
    assert "4: 25" in out
    assert "> 3 TestAdd" in err


def test_run_converts_an_editor_workflow(cli, tmp_path, capsys):
    workflow = {"nodes": [{"id": 1, "type": "TestConst", "mode": 0, "inputs": [],
                           "outputs": [{"name": "INT", "type": "INT", "links": [1]}], "widgets_values": [9]},
                          {"id": 2, "type": "TestShow", "mode": 0, "inputs": [{"name": "value", "type": "*", "link": 1}],
                           "outputs": [], "widgets_values": []}],
                "links": [[1, 1, 0, 2, 0, "INT"]], "version": 0.4}
    assert cli("run", write(tmp_path, "ui.json", workflow), "--seed", "3") == 0
    assert "2: 9" in capsys.readouterr().out


def test_run_hands_an_editor_workflow_to_nodes_as_extra_pnginfo(cli, registry, tmp_path, capsys):
    from typing import Annotated

    from engine.schema import Hidden, NodeOutput, node

    @node("TestPngInfo", category="test", outputs=[], output_node=True)
    def pnginfo(info: Annotated[dict, Hidden("EXTRA_PNGINFO")]):
        return NodeOutput(ui={"text": [sorted(info)]})

    registry.add(pnginfo.spec, core=True)
    workflow = {"nodes": [{"id": 1, "type": "TestPngInfo", "mode": 0, "inputs": [], "outputs": []}], "links": []}
    assert cli("run", write(tmp_path, "ui.json", workflow), "--seed", "1") == 0
    assert "1: ['workflow']" in capsys.readouterr().out


def test_run_reads_the_prompt_chunk_of_a_png(cli, tmp_path, capsys):
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps(chain(2)))
    Image.new("RGB", (4, 4)).save(tmp_path / "img.png", pnginfo=info)
    assert cli("run", str(tmp_path / "img.png")) == 0
    assert "4: 12" in capsys.readouterr().out


def test_run_exits_non_zero_with_the_node_error(cli, tmp_path, capsys):
    prompt = {"1": {"class_type": "TestConst", "inputs": {"value": 3}},
              "2": {"class_type": "TestFail", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "TestShow", "inputs": {"value": ["2", 0]}}}
    assert cli("run", write(tmp_path, "fail.json", prompt)) == 1
    assert "error in node 2 (TestFail): ValueError: bad value 3" in capsys.readouterr().err


def test_run_rejects_a_malformed_set(cli, tmp_path, capsys):
    assert cli("run", write(tmp_path, "api.json", chain()), "--set", "nodot=1") == 1
    assert "expected NODE_ID.INPUT=VALUE" in capsys.readouterr().err


def test_validate_prints_every_error_and_exits_1(cli, tmp_path, capsys):
    prompt = {"1": {"class_type": "TestConst", "inputs": {"value": 500}},
              "3": {"class_type": "TestAdd", "inputs": {"a": ["1", 0]}},
              "2": {"class_type": "TestShow", "inputs": {"value": ["3", 0]}}}
    assert cli("validate", write(tmp_path, "bad.json", prompt)) == 1
    out = capsys.readouterr().out
    assert "node 1 (TestConst): value_bigger_than_max: Value 500 bigger than max of 100: value" in out
    assert "node 3 (TestAdd): required_input_missing: Required input is missing: b" in out


def test_validate_accepts_a_good_workflow(cli, tmp_path, capsys):
    assert cli("validate", write(tmp_path, "ok.json", chain())) == 0
    assert capsys.readouterr().out.startswith("ok: 4 nodes")


def test_nodes_lists_node_types_and_json_prints_object_info(cli, capsys):
    assert cli("nodes") == 0
    assert "TestConst" in capsys.readouterr().out
    assert cli("nodes", "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["TestConst"]["input"]["required"]["value"] == ["INT", {"default": 0, "min": -100, "max": 100}]


def test_serve_is_the_default_command_and_flags_reach_the_config():
    ns = main.parse_args(["--port", "9000", "--cpu", "--cache-lru", "5", "--listen"])
    config = main.config_from_args(ns)
    assert ns.command == "serve"
    assert (config.port, config.cpu, config.cache_policy, config.listen) == (9000, True, ("lru", 5), "0.0.0.0,::")
    assert main.config_from_args(main.parse_args(["--cache-none"])).cache_policy == "none"
