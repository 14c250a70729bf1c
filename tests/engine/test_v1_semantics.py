"""V1 class semantics through the executor: instances, lazy status, IS_CHANGED, blockers, async, expansion."""
from __future__ import annotations

import asyncio
import time

import pytest

from enginetest_nodes import Runner
from engine.compat_v1 import spec_from_class
from engine.graph import ExecutionBlocker, GraphBuilder
from engine.validate import validate_prompt


class Counter:
    """Keeps state on its instance (LoraLoader-style), so instance reuse is observable."""

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0})}}

    def __init__(self):
        self.runs = 0

    def run(self, value):
        self.runs += 1
        return (self.runs,)


class Volatile:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"
    calls = 0
    fingerprint = 1.0

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",)}}

    @classmethod
    def IS_CHANGED(cls, value):
        return cls.fingerprint

    def run(self, value):
        Volatile.calls += 1
        return (value,)


class LazyMix:
    """check_lazy_status on the instance: asks only for the input the switch selects."""

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"pick_a": ("BOOLEAN",), "a": ("INT", {"lazy": True}), "b": ("INT", {"lazy": True})}}

    def check_lazy_status(self, pick_a, a=None, b=None):
        return ["a"] if pick_a else ["b"]

    def run(self, pick_a, a, b):
        return (a if pick_a else b,)


class Gate:
    """Blocks its output (with a message) when `open` is False."""

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",), "open": ("BOOLEAN",)}}

    def run(self, value, open):
        return (value if open else ExecutionBlocker("gate closed"),)


class Sleep:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",), "seconds": ("FLOAT",)}}

    async def run(self, value, seconds):
        await asyncio.sleep(seconds)
        return (value,)


class Collect:
    RETURN_TYPES = ()
    FUNCTION = "run"
    CATEGORY = "test"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}, "optional": {"a": ("*",), "b": ("*",), "c": ("*",)}}

    def run(self, **kwargs):
        return {"ui": {"values": [kwargs[k] for k in sorted(kwargs)]}}


class Looper:
    """Expands into a sub-graph that links back to itself: a run-time dependency cycle."""

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",)}}

    def run(self, value):
        g = GraphBuilder(prefix="loop.")
        a = g.node("TestAdd", a=["loop.b", 0], b=value)
        b = g.node("TestAdd", id="b", a=a.out(0), b=value)
        return {"result": (b.out(0),), "expand": g.finalize()}


CLASSES = {"Counter": Counter, "Volatile": Volatile, "LazyMix": LazyMix, "Gate": Gate, "Sleep": Sleep,
           "Collect": Collect, "Looper": Looper}


@pytest.fixture
def v1(registry):
    for name, cls in CLASSES.items():
        registry.add(spec_from_class(name, cls, python_module="custom_nodes.tests"))
    Volatile.calls = 0
    return Runner(registry)


def const(v):
    return {"class_type": "TestConst", "inputs": {"value": v}}


def test_v1_instances_are_kept_per_node_id_across_prompts(v1):
    prompt = {"1": {"class_type": "Counter", "inputs": {"value": 1}}, "2": {"class_type": "TestShow",
                                                                          "inputs": {"value": ["1", 0]}}}
    assert v1.run(prompt).outputs["2"] == {"text": ["1"]}
    prompt["1"]["inputs"]["value"] = 2
    assert v1.run(prompt).outputs["2"] == {"text": ["2"]}   # the same instance ran a second time


def test_is_changed_value_decides_reruns_and_nan_always_reruns(v1):
    prompt = {"1": const(3), "2": {"class_type": "Volatile", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "TestShow", "inputs": {"value": ["2", 0]}}}
    v1.run(prompt)
    v1.run(prompt)
    assert Volatile.calls == 1
    Volatile.fingerprint = 2.0
    v1.run(prompt)
    assert Volatile.calls == 2
    Volatile.fingerprint = float("nan")
    v1.run(prompt)
    v1.run(prompt)
    assert Volatile.calls == 4
    Volatile.fingerprint = 1.0


def test_v1_check_lazy_status_evaluates_only_the_requested_branch(v1, calls):
    prompt = {"1": const(1), "2": {"class_type": "TestFail", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "LazyMix", "inputs": {"pick_a": False, "a": ["2", 0], "b": ["1", 0]}},
              "4": {"class_type": "TestShow", "inputs": {"value": ["3", 0]}}}
    result = v1.run(prompt)
    assert result.status == "success" and result.outputs["4"] == {"text": ["1"]}
    assert "TestFail" not in calls


def test_an_execution_blocker_skips_downstream_calls_and_reports_once(v1):
    prompt = {"1": const(5), "2": {"class_type": "Gate", "inputs": {"value": ["1", 0], "open": False}},
              "3": {"class_type": "TestAdd", "inputs": {"a": ["2", 0], "b": ["1", 0]}},
              "4": {"class_type": "TestShow", "inputs": {"value": ["3", 0]}}}
    result = v1.run(prompt)
    assert result.status == "success"
    assert "4" not in result.outputs
    blocked = [d for e, d in v1.events if e == "execution_error"]
    assert len(blocked) == 1 and blocked[0]["exception_message"] == "Execution Blocked: gate closed"
    assert blocked[0]["exception_type"] == "ExecutionBlocked" and "timestamp" not in blocked[0]
    assert "3" not in v1.executing() and "4" not in v1.executing()
    assert [m[0] for m in result.messages][-1] == "execution_success"


def test_blocking_one_list_element_still_runs_the_others(v1, registry):
    class GateOdd(Gate):
        def run(self, value, open):
            return (ExecutionBlocker(None) if value % 2 else value,)

    registry.add(spec_from_class("GateOdd", GateOdd))
    prompt = {"1": {"class_type": "TestRange", "inputs": {"count": 4}},
              "2": {"class_type": "GateOdd", "inputs": {"value": ["1", 0], "open": True}},
              "3": {"class_type": "TestShow", "inputs": {"value": ["2", 0]}}}
    assert v1.run(prompt).outputs["3"] == {"text": ["0", "2"]}


def test_independent_async_nodes_run_concurrently(v1):
    prompt = {"1": const(1)}
    for i, key in enumerate("abc"):
        prompt[f"s{i}"] = {"class_type": "Sleep", "inputs": {"value": ["1", 0], "seconds": 0.4}}
    prompt["9"] = {"class_type": "Collect", "inputs": {k: [f"s{i}", 0] for i, k in enumerate("abc")}}
    start = time.perf_counter()
    result = v1.run(prompt)
    elapsed = time.perf_counter() - start
    assert result.status == "success" and result.outputs["9"] == {"values": [1, 1, 1]}
    assert elapsed < 1.1   # three 0.4 s sleeps overlapped
    assert all(v1.executing().count(f"s{i}") == 1 for i in range(3))


def test_interrupting_a_running_async_node_reports_it(v1):
    prompt = {"1": const(1), "2": {"class_type": "Sleep", "inputs": {"value": ["1", 0], "seconds": 5.0}},
              "3": {"class_type": "Collect", "inputs": {"a": ["2", 0]}}}

    def emit(event, data):
        v1.events.append((event, data))
        if event == "executing" and data["node"] == "2":
            v1.interrupt.set()

    start = time.perf_counter()
    result = v1.executor.run("p", prompt, emit=emit, interrupt=v1.interrupt)
    assert result.status == "interrupted" and result.error["node_id"] == "2"
    assert time.perf_counter() - start < 2.0


def test_a_cycle_created_by_expansion_is_a_dependency_cycle_error(v1):
    prompt = {"1": const(1), "2": {"class_type": "Looper", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "TestShow", "inputs": {"value": ["2", 0]}}}
    assert validate_prompt(v1.executor.registry, prompt).ok
    result = v1.run(prompt)
    assert result.status == "error"
    assert result.error["exception_type"] == "graph.DependencyCycleError"
    assert result.error["exception_message"] == "Dependency cycle detected"
    assert result.error["node_id"] == "2"   # the expansion-created member, reported by its display id


def test_v1_dict_returns_carry_ui_and_result(v1, registry):
    class Both:
        RETURN_TYPES = ("INT",)
        FUNCTION = "run"
        CATEGORY = "test"
        OUTPUT_NODE = True

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"value": ("INT",)}, "hidden": {"prompt": "PROMPT", "uid": "UNIQUE_ID"}}

        def run(self, value, prompt, uid):
            return {"ui": {"text": [f"{uid}:{len(prompt)}"]}, "result": (value * 2,)}

    registry.add(spec_from_class("Both", Both))
    prompt = {"1": const(4), "2": {"class_type": "Both", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "TestShow", "inputs": {"value": ["2", 0]}}}
    result = v1.run(prompt)
    assert result.outputs == {"2": {"text": ["2:3"]}, "3": {"text": ["8"]}}


def test_expansion_under_list_mapping_prefixes_ids_with_the_call_index(v1, registry):
    class Doubler:
        RETURN_TYPES = ("INT",)
        FUNCTION = "run"
        CATEGORY = "test"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"value": ("INT",)}}

        def run(self, value):
            g = GraphBuilder()
            return {"result": (g.node("TestAdd", a=value, b=value).out(0),), "expand": g.finalize()}

    registry.add(spec_from_class("Doubler", Doubler))
    prompt = {"1": {"class_type": "TestRange", "inputs": {"count": 3}},
              "2": {"class_type": "Doubler", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "TestShow", "inputs": {"value": ["2", 0]}}}
    result = v1.run(prompt)
    assert result.outputs["3"] == {"text": ["0", "2", "4"]}
    assert sorted(n for n in v1.executing() if n.startswith("2.")) == ["2.0.0.1", "2.1.0.1", "2.2.0.1"]


def test_a_malformed_list_output_is_that_nodes_error_not_an_executor_crash(v1, registry):
    class BadList:
        RETURN_TYPES = ("INT",)
        OUTPUT_IS_LIST = (True,)
        FUNCTION = "run"
        CATEGORY = "test"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}}

        def run(self):
            return (5,)   # a list output must be a list

    registry.add(spec_from_class("BadList", BadList))
    result = v1.run({"1": {"class_type": "BadList", "inputs": {}},
                     "2": {"class_type": "TestShow", "inputs": {"value": ["1", 0]}}})
    assert result.status == "error" and result.error["node_id"] == "1"
    assert result.error["exception_type"] == "TypeError"
