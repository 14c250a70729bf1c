"""Core nodes run through the real executor: hidden inputs arrive and outputs flow between nodes."""

import json
import os

import numpy as np
from PIL import Image

from engine.executor import Executor
from engine.registry import Registry


def test_a_small_graph_saves_a_png_carrying_the_executed_prompt_and_workflow(paths):
    registry = Registry(paths)
    registry.load_builtins()
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 4, "batch_size": 1, "color": 0x102030}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "graph/out"}},
    }
    workflow = {"last_node_id": 3, "nodes": []}
    result = Executor(registry, paths=paths).run("p1", prompt, extra_data={"extra_pnginfo": {"workflow": workflow}})
    assert result.status == "success", result.messages
    assert result.outputs["3"]["images"] == [{"filename": "out_00001_.png", "subfolder": "graph", "type": "output"}]
    png = Image.open(os.path.join(paths.output_dir, "graph", "out_00001_.png"))
    assert json.loads(png.text["prompt"]) == prompt
    assert json.loads(png.text["workflow"]) == workflow
    assert np.array(png)[0, 0].tolist() == [255 - 0x10, 255 - 0x20, 255 - 0x30]
