"""Small test nodes for the API tests: a constant, a slow counter with progress, an output, a failure."""

import time
from typing import Annotated

from engine.schema import Float, Int, NodeOutput, Output, Socket, node


@node("TestConst", category="testing", outputs=[Output("INT")])
def test_const(value: Annotated[int, Int(default=1, min=0, max=1000)]):
    """An integer constant."""
    return value


@node("TestSlow", category="testing", outputs=[Output("INT")], not_idempotent=True)
def test_slow(value: Annotated[int, Socket("INT")], seconds: Annotated[float, Float(default=0.1, min=0.0, max=60.0)],
              steps: Annotated[int, Int(default=4, min=1, max=1000)], ctx=None):
    """Sleeps `seconds` in `steps` slices, reporting progress (so it can be interrupted) each slice."""
    for i in range(steps):
        time.sleep(seconds / steps)
        ctx.progress(i + 1, steps)
    return value


@node("TestOutput", category="testing", output_node=True)
def test_output(value: Annotated[int, Socket("INT")]):
    """Shows the value in the UI (an output node)."""
    return NodeOutput(ui={"text": [str(value)]})


@node("TestPreview", category="testing", outputs=[Output("INT")], not_idempotent=True)
def test_preview(value: Annotated[int, Socket("INT")], steps: Annotated[int, Int(default=3, min=1, max=100)],
                 pause: Annotated[float, Float(default=0.0, min=0.0, max=1.0)], ctx=None):
    """Reports `steps` progress updates, each with a small JPEG preview, `pause` seconds apart."""
    from PIL import Image

    for i in range(steps):
        ctx.progress(i + 1, steps, ("JPEG", Image.new("RGB", (640, 320), (10 * i, 100, 200)), None))
        time.sleep(pause)
    return value


@node("TestFail", category="testing", outputs=[Output("INT")])
def test_fail(value: Annotated[int, Socket("INT")]):
    """Always raises."""
    raise ValueError(f"refusing {value}")


SPECS = [test_const.spec, test_slow.spec, test_output.spec, test_preview.spec, test_fail.spec]
