"""Test nodes declared natively (no torch) and helpers to run prompts against them.

Imported by name from tests/engine (a module name no other test folder uses, unlike `conftest`).
"""
from __future__ import annotations

import threading
from typing import Annotated

from engine.cache import make_cache
from engine.executor import Executor
from engine.registry import Registry
from engine.schema import Boolean, Combo, Float, Hidden, Int, NodeOutput, Output, Socket, String, node

CALLS: list[str] = []


@node("TestConst", category="test", outputs=[Output("INT")])
def test_const(value: Annotated[int, Int(default=0, min=-100, max=100)]):
    CALLS.append("TestConst")
    return value


@node("TestAdd", category="test", outputs=[Output("INT")])
def test_add(a: Annotated[int, Socket("INT")], b: Annotated[int, Socket("INT")]):
    CALLS.append("TestAdd")
    return a + b


@node("TestShow", category="test", outputs=[], output_node=True)
def test_show(value: Annotated[object, Socket("*")]):
    CALLS.append("TestShow")
    return NodeOutput(ui={"text": [str(value)]})


@node("TestFail", category="test", outputs=[Output("INT")])
def test_fail(value: Annotated[int, Socket("INT")]):
    CALLS.append("TestFail")
    raise ValueError(f"bad value {value}")


@node("TestWidgets", category="test", outputs=[Output("STRING")])
def test_widgets(
    mode: Annotated[str, Combo(["red", "green", "blue"])],
    ratio: Annotated[float, Float(default=0.5, min=0.0, max=1.0, step=0.01)],
    flag: Annotated[bool, Boolean(default=True)],
    text: Annotated[str, String(default="", multiline=True)],
):
    CALLS.append("TestWidgets")
    return f"{mode}:{ratio}:{flag}:{text}"


@node("TestImageSink", category="test", outputs=[], output_node=True)
def test_image_sink(image: Annotated[object, Socket("IMAGE")]):
    return NodeOutput(ui={"images": [image]})


@node("TestMaskSource", category="test", outputs=[Output("MASK")])
def test_mask_source(seed: Annotated[int, Int(default=0, min=0, max=10)]):
    return "mask"


@node("TestLazySwitch", category="test", outputs=[Output("INT")],
      check_lazy_status=lambda use_a, a=None, b=None: ["a"] if use_a else ["b"])
def test_lazy_switch(use_a: Annotated[bool, Boolean(default=True)],
                     a: Annotated[int, Socket("INT", lazy=True)], b: Annotated[int, Socket("INT", lazy=True)]):
    CALLS.append("TestLazySwitch")
    return a if use_a else b


@node("TestRange", category="test", outputs=[Output("INT", is_list=True)])
def test_range(count: Annotated[int, Int(default=3, min=0, max=100)]):
    CALLS.append("TestRange")
    return (list(range(count)),)


@node("TestSum", category="test", outputs=[Output("INT")], input_is_list=True)
def test_sum(values: Annotated[list, Socket("INT")]):
    CALLS.append("TestSum")
    return sum(values)


@node("TestSlow", category="test", outputs=[Output("INT")])
def test_slow(value: Annotated[int, Socket("INT")], steps: Annotated[int, Int(default=5, min=1, max=1000)],
              ctx=None):
    CALLS.append("TestSlow")
    for i in range(steps):
        ctx.progress(i + 1, steps)
    return value


@node("TestIdentity", category="test", outputs=[Output("INT")], not_idempotent=True)
def test_identity(value: Annotated[int, Socket("INT")], uid: Annotated[str, Hidden("UNIQUE_ID")]):
    CALLS.append("TestIdentity")
    return value


ALL = [test_const, test_add, test_show, test_fail, test_widgets, test_image_sink, test_mask_source,
       test_lazy_switch, test_range, test_sum, test_slow, test_identity]


class Runner:
    """Runs prompts on one executor and records the events of the last run."""

    def __init__(self, registry: Registry, cache="classic"):
        self.executor = Executor(registry, cache=make_cache(cache))
        self.events: list[tuple[str, dict]] = []
        self.interrupt = threading.Event()

    def run(self, prompt: dict, outputs=None):
        self.events = []
        return self.executor.run("p", prompt, outputs=outputs, emit=lambda e, d: self.events.append((e, d)),
                                 interrupt=self.interrupt)

    def names(self) -> list[str]:
        return [e for e, _ in self.events]

    def executing(self) -> list[str]:
        return [d["node"] for e, d in self.events if e == "executing"]


def chain(value=1) -> dict:
    """TestConst(1) and TestConst(2) → TestAdd(3) → TestShow(4)."""
    return {"1": {"class_type": "TestConst", "inputs": {"value": value}},
            "2": {"class_type": "TestConst", "inputs": {"value": 10}},
            "3": {"class_type": "TestAdd", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
            "4": {"class_type": "TestShow", "inputs": {"value": ["3", 0]}}}
