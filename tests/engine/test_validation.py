"""Every validation error type of execution.md §2, in the wire shapes of api.md §1.3."""
from __future__ import annotations

from typing import Annotated

from hypothesis import HealthCheck, given, settings, strategies as st

from engine.schema import Combo, Int, Output, node
from engine.validate import types_compatible, validate_prompt


def show(src: str) -> dict:
    return {"class_type": "TestShow", "inputs": {"value": [src, 0]}}


def errors_of(result, node_id: str) -> list[dict]:
    return result.node_errors[node_id]["errors"]


def test_a_node_without_class_type_is_an_invalid_prompt(registry):
    r = validate_prompt(registry, {"1": {"inputs": {}}})
    assert r.body() == {"error": {"type": "invalid_prompt",
                                  "message": "Cannot execute because a node is missing the class_type property.",
                                  "details": "Node ID '#1'", "extra_info": {}}, "node_errors": {}}


def test_an_unknown_class_is_an_invalid_prompt(registry):
    r = validate_prompt(registry, {"1": {"class_type": "NopeNode", "inputs": {}}})
    assert r.error["message"] == "Cannot execute because node NopeNode does not exist."
    assert r.error["details"] == "Node ID '#1'"


def test_an_editor_workflow_posted_as_a_prompt_is_named_as_such(registry):
    r = validate_prompt(registry, {"nodes": [], "links": []})
    assert r.error["type"] == "invalid_prompt"
    assert r.error["details"] == "This is an editor (UI) workflow; convert it to API format first"


def test_a_prompt_without_output_nodes_has_no_outputs(registry):
    r = validate_prompt(registry, {"1": {"class_type": "TestConst", "inputs": {"value": 1}}})
    assert r.error == {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "",
                       "extra_info": {}}


def test_an_empty_partial_target_list_has_no_outputs(registry):
    r = validate_prompt(registry, {"1": {"class_type": "TestConst", "inputs": {"value": 1}}, "2": show("1")}, [])
    assert r.error["type"] == "prompt_no_outputs"


def test_a_missing_required_input_is_reported_with_its_name(registry):
    r = validate_prompt(registry, {"1": {"class_type": "TestConst", "inputs": {}}, "2": show("1")})
    assert not r.ok
    assert r.error == {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                       "details": "", "extra_info": {}}
    assert r.node_errors == {"1": {"errors": [{"type": "required_input_missing",
                                               "message": "Required input is missing", "details": "value",
                                               "extra_info": {"input_name": "value"}}],
                                   "dependent_outputs": ["2"], "class_type": "TestConst"}}


def test_a_malformed_link_is_a_bad_linked_input_and_named_in_the_top_level_details(registry):
    for bad in (["1"], [1, 0], ["1", "0"], ["1", -1]):
        r = validate_prompt(registry, {"1": {"class_type": "TestConst", "inputs": {"value": 1}},
                                       "2": {"class_type": "TestShow", "inputs": {"value": bad}}})
        (err,) = errors_of(r, "2")
        assert err["type"] == "bad_linked_input", bad
        assert err["extra_info"] == {"input_name": "value", "input_config": ["*", {}], "received_value": bad}
        assert r.error["details"] == "Bad linked input, must be a length-2 list of [node_id, slot_index]: value"


def test_a_link_to_a_missing_node_is_reported_on_the_node_that_owns_the_link(registry):
    r = validate_prompt(registry, {"2": show("99")})
    (err,) = errors_of(r, "2")
    assert err["type"] == "exception_during_validation"
    assert err["details"] == "value: linked node '99' does not exist"
    assert err["extra_info"] == {"input_name": "value", "linked_node": ["99", 0], "exception_type": "",
                                 "traceback": []}


def test_a_link_to_a_missing_output_slot_is_reported_readably(registry):
    r = validate_prompt(registry, {"1": {"class_type": "TestConst", "inputs": {"value": 1}},
                                   "2": {"class_type": "TestShow", "inputs": {"value": ["1", 5]}}})
    assert errors_of(r, "2")[0]["details"] == "value: node '1' (TestConst) has no output slot 5"


def test_linking_mask_into_image_is_a_return_type_mismatch(registry):
    r = validate_prompt(registry, {"1": {"class_type": "TestMaskSource", "inputs": {"seed": 0}},
                                   "2": {"class_type": "TestImageSink", "inputs": {"image": ["1", 0]}}})
    (err,) = errors_of(r, "2")
    assert err == {"type": "return_type_mismatch", "message": "Return type mismatch between linked nodes",
                   "details": "image, received_type(MASK) mismatch input_type(IMAGE)",
                   "extra_info": {"input_name": "image", "input_config": ["IMAGE", {}], "received_type": "MASK",
                                  "linked_node": ["1", 0]}}


def test_type_compatibility_accepts_any_unions_and_anytype_strings():
    class AnyType(str):
        def __ne__(self, other):
            return False

    assert types_compatible("IMAGE", "IMAGE")
    assert types_compatible("MASK", "*") and types_compatible("*", "LATENT")
    assert types_compatible("FLOAT", "IMAGE,FLOAT") and types_compatible("IMAGE,FLOAT", "IMAGE")
    assert not types_compatible("INT", "IMAGE,FLOAT")
    assert types_compatible(AnyType("*"), "MODEL")
    assert types_compatible(["a", "b"], "COMBO")
    assert not types_compatible("MASK", "IMAGE")


def test_an_unconvertible_constant_is_an_invalid_input_type(registry):
    r = validate_prompt(registry, {"1": {"class_type": "TestConst", "inputs": {"value": "abc"}}, "2": show("1")})
    (err,) = errors_of(r, "1")
    assert err["type"] == "invalid_input_type"
    assert err["message"] == "Failed to convert an input value to a INT value"
    assert err["details"] == "value, abc, invalid literal for int() with base 10: 'abc'"


def test_constants_are_converted_in_place_and_value_wrappers_unwrapped(registry):
    prompt = {"1": {"class_type": "TestConst", "inputs": {"value": "8"}},
              "3": {"class_type": "TestWidgets", "inputs": {"mode": {"__value__": "red"}, "ratio": "0.25",
                                                            "flag": "false", "text": 5}},
              "2": show("1"), "4": show("3")}
    assert validate_prompt(registry, prompt).ok
    assert prompt["1"]["inputs"]["value"] == 8
    assert prompt["3"]["inputs"] == {"mode": "red", "ratio": 0.25, "flag": True, "text": "5"}


def test_values_outside_min_and_max_are_reported_with_python_number_text(registry):
    small = validate_prompt(registry, {"1": {"class_type": "TestConst", "inputs": {"value": -101}}, "2": show("1")})
    assert errors_of(small, "1")[0]["type"] == "value_smaller_than_min"
    assert errors_of(small, "1")[0]["message"] == "Value -101 smaller than min of -100"
    big = validate_prompt(registry, {"1": {"class_type": "TestConst", "inputs": {"value": 101}}, "2": show("1")})
    assert errors_of(big, "1")[0]["message"] == "Value 101 bigger than max of 100"
    assert errors_of(big, "1")[0]["extra_info"]["received_value"] == 101


def test_a_combo_value_not_in_the_list_is_reported_with_the_options(registry):
    r = validate_prompt(registry, {"1": {"class_type": "TestWidgets",
                                         "inputs": {"mode": "purple", "ratio": 0.5, "flag": True, "text": ""}},
                                   "2": show("1")})
    (err,) = errors_of(r, "1")
    assert err["type"] == "value_not_in_list"
    assert err["details"] == "mode: 'purple' not in ['red', 'green', 'blue']"
    assert err["extra_info"]["input_config"] == [["red", "green", "blue"], {}]


def test_long_combo_lists_are_summarised_and_drop_the_input_config(registry):

    @node("TestLong", category="test", outputs=[Output("STRING")])
    def long(choice: Annotated[str, Combo([f"o{i}" for i in range(44)], style="combo")]):
        return choice

    registry.add(long.spec, core=True)
    r = validate_prompt(registry, {"1": {"class_type": "TestLong", "inputs": {"choice": "nope"}}, "2": show("1")})
    (err,) = errors_of(r, "1")
    assert err["details"] == "choice: 'nope' not in (list of length 44)"
    assert err["extra_info"]["input_config"] is None


def test_validate_inputs_failure_is_reported_once_per_argument(registry):
    @node("TestChecked", category="test", outputs=[Output("INT")],
          validate_inputs=lambda a, b: "Invalid type of input1: <class 'int'>")
    def checked(a: Annotated[int, Int(min=0, max=1)], b: Annotated[int, Int()]):
        return a

    registry.add(checked.spec, core=True)
    r = validate_prompt(registry, {"1": {"class_type": "TestChecked", "inputs": {"a": 50, "b": 2}}, "2": show("1")})
    assert [(e["type"], e["details"]) for e in errors_of(r, "1")] == [
        ("custom_validation_failed", "a - Invalid type of input1: <class 'int'>"),
        ("custom_validation_failed", "b - Invalid type of input1: <class 'int'>")]   # a's max is not checked


def test_an_exception_inside_upstream_validation_is_recorded_on_the_upstream_node(registry):
    def boom(value):
        raise AttributeError("'int' object has no attribute 'endswith'")

    @node("TestBoom", category="test", outputs=[Output("INT")], validate_inputs=boom)
    def boom_node(value: Annotated[int, Int()]):
        return value

    registry.add(boom_node.spec, core=True)
    r = validate_prompt(registry, {"1": {"class_type": "TestBoom", "inputs": {"value": 1}}, "2": show("1")})
    (err,) = errors_of(r, "1")
    assert err["type"] == "exception_during_inner_validation"
    assert err["extra_info"]["input_name"] == "value" and err["extra_info"]["linked_node"] == ["1", 0]
    assert err["extra_info"]["exception_type"] == "AttributeError"


def test_a_cycle_lists_every_node_on_it(registry):
    r = validate_prompt(registry, {"1": {"class_type": "TestAdd", "inputs": {"a": ["3", 0], "b": ["3", 0]}},
                                   "3": {"class_type": "TestAdd", "inputs": {"a": ["1", 0], "b": ["1", 0]}},
                                   "2": show("1")})
    assert set(r.node_errors) == {"1", "3"}
    err = errors_of(r, "1")[0]
    assert err["type"] == "dependency_cycle" and err["details"] == "1 -> 3 -> 1"
    assert r.node_errors["3"]["dependent_outputs"] == ["2"]


def test_all_errors_of_a_prompt_are_reported_at_once(registry):
    r = validate_prompt(registry, {"1": {"class_type": "TestConst", "inputs": {"value": 500}},
                                   "3": {"class_type": "TestAdd", "inputs": {"a": ["1", 0]}},
                                   "2": show("3"), "4": show("1")})
    assert set(r.node_errors) == {"1", "3"}
    assert r.node_errors["1"]["dependent_outputs"] == ["2", "4"]
    assert errors_of(r, "3")[0]["type"] == "required_input_missing"


def test_one_valid_output_still_queues_the_prompt_with_the_others_reported(registry):
    r = validate_prompt(registry, {"1": {"class_type": "TestConst", "inputs": {"value": 1}}, "2": show("1"),
                                   "3": show("99")})
    assert r.ok and r.outputs == ["2"]
    assert r.node_errors["3"]["dependent_outputs"] == ["3"]


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                   max_size=3), max_leaves=8)
_ids = st.sampled_from(["1", "2", "3", "99"])
_value = _json | st.tuples(_ids, st.integers(-1, 3)).map(list)
_node = st.fixed_dictionaries({"class_type": st.sampled_from(["TestConst", "TestAdd", "TestShow", "TestWidgets",
                                                              "TestLazySwitch", "TestSum"])},
                              optional={"inputs": st.dictionaries(st.sampled_from(["value", "a", "b", "mode", "ratio",
                                                                                   "flag", "text", "use_a", "values",
                                                                                   "extra"]), _value, max_size=5)})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(_ids, _node, min_size=1, max_size=4))
def test_any_malformed_prompt_gets_error_objects_and_never_a_traceback(registry, prompt):
    """(The registry fixture is read-only here, so sharing it across examples is fine.)"""
    import json

    result = validate_prompt(registry, prompt)
    json.dumps(result.body(), default=str)
    for entry in result.node_errors.values():
        for err in entry["errors"]:
            assert set(err) == {"type", "message", "details", "extra_info"}
    assert result.ok or result.error["type"] in ("prompt_outputs_failed_validation", "prompt_no_outputs")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(_ids, _node, min_size=1, max_size=4))
def test_whatever_passes_validation_runs_to_a_result_without_crashing_the_executor(registry, prompt):
    """Validated prompts end in success or a node's error event; the executor itself never raises."""
    from engine.executor import Executor

    result = validate_prompt(registry, prompt)
    if result.ok:
        run = Executor(registry).run("p", prompt, outputs=result.outputs)
        assert run.status in ("success", "error")
