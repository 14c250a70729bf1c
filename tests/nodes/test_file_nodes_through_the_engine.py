"""Nodes that find and hash input files through `ctx` work through the real validator and executor."""

import os
import threading

import numpy as np
from PIL import Image

from engine.executor import Executor
from engine.registry import Registry
from engine.validate import validate_prompt


def make_registry(paths):
    registry = Registry(paths)
    registry.load_builtins()
    return registry


def prompt(image_name):
    return {"1": {"class_type": "LoadImage", "inputs": {"image": image_name}},
            "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}


def test_load_image_validates_runs_and_reruns_only_when_the_file_changes(paths):
    path = os.path.join(paths.input_dir, "red.png")
    Image.fromarray(np.full((8, 8, 3), (255, 0, 0), np.uint8)).save(path)
    registry = make_registry(paths)
    assert validate_prompt(registry, prompt("red.png")).ok
    executor = Executor(registry, paths=paths)
    first = executor.run("p1", prompt("red.png"), extra_data={}, outputs=None, emit=lambda *a: None,
                         interrupt=threading.Event())
    assert first.status == "success" and set(first.executed) == {"1", "2"}
    again = executor.run("p2", prompt("red.png"), extra_data={}, outputs=None, emit=lambda *a: None,
                         interrupt=threading.Event())
    assert list(again.executed) == []
    Image.fromarray(np.full((8, 8, 3), (0, 0, 255), np.uint8)).save(path)
    changed = executor.run("p3", prompt("red.png"), extra_data={}, outputs=None, emit=lambda *a: None,
                           interrupt=threading.Event())
    assert "1" in changed.executed


def test_a_missing_image_is_a_validation_error_naming_the_input(paths):
    result = validate_prompt(make_registry(paths), prompt("nope.png"))
    assert not result.ok
    errors = result.node_errors["1"]["errors"]
    assert errors[0]["type"] == "custom_validation_failed"
    assert errors[0]["extra_info"]["input_name"] == "image"
    assert all(e["extra_info"]["input_name"] != "ctx" for e in errors)
