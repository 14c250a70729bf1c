"""Editor (UI) workflow → API prompt conversion (workflows.md §3)."""
from __future__ import annotations

from typing import Annotated

import pytest

from engine.errors import WorkflowError
from engine.schema import Combo, Int, Output, String, node
from engine.workflow import editor_to_api, is_editor_workflow, load_prompt


@node("TestSeeded", category="test", outputs=[Output("INT")])
def seeded(seed: Annotated[int, Int(default=0, min=0, max=2**32)],
           steps: Annotated[int, Int(default=20, min=1, max=100)],
           sampler: Annotated[str, Combo(["euler", "ddim"], control_after_generate=True)],
           image: Annotated[str, Combo(["a.png"], image_upload=True)],
           note: Annotated[str, String(default="x")]):
    return seed


@pytest.fixture
def info(registry):
    registry.add(seeded.spec, core=True)
    return registry.object_info()


def n(id, type, inputs=(), outputs=(), widgets=(), mode=0, **kw):
    return dict({"id": id, "type": type, "mode": mode, "inputs": list(inputs), "outputs": list(outputs),
                 "widgets_values": list(widgets)}, **kw)


def wf(nodes, links, **kw):
    return dict({"last_node_id": 9, "last_link_id": 9, "nodes": nodes, "links": links, "groups": [], "config": {},
                 "extra": {}, "version": 0.4}, **kw)


def const(id, value, links, mode=0):
    return n(id, "TestConst", outputs=[{"name": "INT", "type": "INT", "links": links}], widgets=[value], mode=mode)


def show(id, link, title=None):
    extra = {"title": title} if title else {}
    return n(id, "TestShow", inputs=[{"name": "value", "type": "*", "link": link}], **extra)


def test_editor_workflows_are_recognised_and_api_prompts_pass_through(info):
    api = {"1": {"class_type": "TestConst", "inputs": {"value": 1}}}
    assert not is_editor_workflow(api) and load_prompt(api, info) is api
    assert is_editor_workflow(wf([], []))


def test_widget_values_skip_control_values_and_the_upload_button(info):
    w = wf([n(1, "TestSeeded", widgets=[42, "randomize", 8, "ddim", "fixed", "", "a.png", "hello", "image"])], [])
    assert editor_to_api(w, info)["1"]["inputs"] == {"seed": 42, "steps": 8, "sampler": "ddim", "image": "a.png",
                                                     "note": "hello"}


def test_missing_widget_values_take_defaults_and_array_values_are_wrapped(info):
    w = wf([n(1, "TestWidgets", widgets=[["x"]])], [])
    assert editor_to_api(w, info)["1"]["inputs"] == {"mode": {"__value__": ["x"]}, "ratio": 0.5, "flag": True,
                                                     "text": ""}


def test_links_become_id_slot_pairs_and_titles_go_into_meta(info):
    w = wf([const(1, 5, [1]), show(2, 1, title="Result")], [[1, 1, 0, 2, 0, "INT"]])
    prompt = editor_to_api(w, info)
    assert prompt["2"] == {"inputs": {"value": ["1", 0]}, "class_type": "TestShow", "_meta": {"title": "Result"}}
    assert prompt["1"]["_meta"] == {"title": "TestConst"}


def test_a_bypassed_node_is_wired_through_by_type(info):
    add = n(2, "TestAdd", mode=4, inputs=[{"name": "a", "type": "INT", "link": 1}, {"name": "b", "type": "INT",
                                                                                   "link": None}],
            outputs=[{"name": "INT", "type": "INT", "links": [2]}])
    w = wf([const(1, 5, [1]), add, show(3, 2)], [[1, 1, 0, 2, 0, "INT"], [2, 2, 0, 3, 0, "INT"]])
    prompt = editor_to_api(w, info)
    assert "2" not in prompt
    assert prompt["3"]["inputs"] == {"value": ["1", 0]}


def test_a_muted_node_is_dropped_and_its_links_removed(info):
    w = wf([const(1, 5, [1], mode=2), show(2, 1)], [[1, 1, 0, 2, 0, "INT"]])
    prompt = editor_to_api(w, info)
    assert list(prompt) == ["2"] and prompt["2"]["inputs"] == {}


def test_reroutes_are_followed_to_the_real_source(info):
    reroute = n(2, "Reroute", inputs=[{"name": "", "type": "*", "link": 1}],
                outputs=[{"name": "", "type": "INT", "links": [2]}])
    w = wf([const(1, 5, [1]), reroute, show(3, 2)], [[1, 1, 0, 2, 0, "*"], [2, 2, 0, 3, 0, "INT"]])
    assert editor_to_api(w, info)["3"]["inputs"] == {"value": ["1", 0]}


def test_a_primitive_node_writes_its_value_into_the_linked_widget(info):
    prim = n(1, "PrimitiveNode", outputs=[{"name": "INT", "type": "INT", "links": [1], "widget": {"name": "value"}}],
             widgets=[77, "fixed"])
    target = n(2, "TestConst", inputs=[{"name": "value", "type": "INT", "link": 1, "widget": {"name": "value"}}],
               outputs=[{"name": "INT", "type": "INT", "links": [2]}], widgets=[3])
    note = n(4, "Note", widgets=["just a note"])
    w = wf([prim, target, show(3, 2), note], [[1, 1, 0, 2, 0, "INT"], [2, 2, 0, 3, 0, "INT"]])
    prompt = editor_to_api(w, info)
    assert prompt["2"]["inputs"] == {"value": 77}
    assert set(prompt) == {"2", "3"}


def test_subgraph_instances_are_flattened_with_path_ids(info):
    definition = {
        "id": "sub-uuid", "version": 1, "name": "Adder",
        "inputs": [{"name": "x", "type": "INT", "linkIds": [11]}], "outputs": [{"name": "sum", "type": "INT"}],
        "nodes": [const(5, 100, [12]),
                  n(6, "TestAdd", inputs=[{"name": "a", "type": "INT", "link": 11}, {"name": "b", "type": "INT",
                                                                                   "link": 12}],
                    outputs=[{"name": "INT", "type": "INT", "links": [13]}])],
        "links": [{"id": 11, "origin_id": -10, "origin_slot": 0, "target_id": 6, "target_slot": 0, "type": "INT"},
                  {"id": 12, "origin_id": 5, "origin_slot": 0, "target_id": 6, "target_slot": 1, "type": "INT"},
                  {"id": 13, "origin_id": 6, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "INT"}]}
    inst = n(2, "sub-uuid", inputs=[{"name": "x", "type": "INT", "link": 1}],
             outputs=[{"name": "sum", "type": "INT", "links": [2]}])
    w = wf([const(1, 5, [1]), inst, show(3, 2)], [[1, 1, 0, 2, 0, "INT"], [2, 2, 0, 3, 0, "INT"]],
           definitions={"subgraphs": [definition]})
    prompt = editor_to_api(w, info)
    assert set(prompt) == {"1", "2:5", "2:6", "3"}
    assert prompt["2:6"]["inputs"] == {"a": ["1", 0], "b": ["2:5", 0]}
    assert prompt["3"]["inputs"] == {"value": ["2:6", 0]}


def test_unknown_node_types_produce_one_error_listing_all_of_them(info):
    w = wf([n(1, "NopeA"), n(2, "NopeB"), n(3, "NopeA"), const(4, 1, [])], [])
    with pytest.raises(WorkflowError) as exc:
        editor_to_api(w, info)
    assert str(exc.value) == "Workflow uses unknown node types: NopeA, NopeB"


def test_dynamic_prompts_pick_seeded_choices_and_strip_comments():
    import random

    from engine.workflow import dynamic_prompt

    picks = {dynamic_prompt("a {red|blue} car // draft", random.Random(seed)) for seed in range(20)}
    assert picks == {"a red car ", "a blue car "}
    assert dynamic_prompt("{x|{y|y}} \\{kept\\} /* note */end", random.Random(0)) in ("x {kept} end", "y {kept} end")
    assert dynamic_prompt("a {b|c", random.Random(0)) == "a {b|c"


def test_filename_patterns_expand_dates_and_node_widgets():
    import datetime

    from engine.workflow import filename_pattern

    workflow = {"nodes": [{"id": 4, "type": "TestConst", "properties": {"Node name for S&R": "Loader"}}]}
    prompt = {"4": {"inputs": {"ckpt": "sd/v1:5.safetensors"}}}
    now = datetime.datetime(2026, 11, 25, 14, 29, 32)
    assert filename_pattern("%date:yyyy-MM-dd%/%Loader.ckpt%_%width%_%Nope.x%", workflow, prompt, now) == \
        "2026-11-25/sd_v1_5.safetensors_%width%_%Nope.x%"


def test_the_default_sd15_workflow_converts_to_exactly_the_editors_api_prompt():
    import json
    import os

    fixtures = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "engine")

    def load(name):
        with open(os.path.join(fixtures, name), encoding="utf-8") as f:
            return json.load(f)

    prompt = editor_to_api(load("default_sd15_workflow.json"), load("object_info_sd15.json"))
    assert prompt == load("default_sd15_api.json")


def test_server_side_date_patterns_expand_only_date_groups():
    import datetime

    from engine.workflow import expand_date_patterns

    now = datetime.datetime(2026, 1, 2, 3, 4, 5)
    assert expand_date_patterns("out/%date:yyMMdd-h_m_s%_%width%", now) == "out/260102-3_4_5_%width%"
