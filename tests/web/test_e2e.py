"""The editor served by the real Kiln server (`main.py serve`), end to end."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from webtools import ROOT, Editor, build_txt2img

DEMO_CHECKPOINT = ROOT / "models" / "checkpoints" / "kiln-demo-shapes.safetensors"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class KilnProcess:
    """`main.py serve` on a fixed port with throwaway user, input, output and temp folders."""

    def __init__(self, tmp: Path):
        self.dirs = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        for name in ("user", "input", "output", "temp"):
            (tmp / name).mkdir()

    def start(self):
        args = [sys.executable, str(ROOT / "main.py"), "serve", "--port", str(self.port), "--cpu", "--preview-method", "auto"]
        for name in ("user", "input", "output", "temp"):
            args += [f"--{name}-directory", str(self.dirs / name)]
        log = open(self.dirs / "server.log", "ab")
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/api/system_stats", timeout=2).read()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.proc.kill()
                    pytest.fail(f"the server did not start:\n{(self.dirs / 'server.log').read_text()[-3000:]}")
                time.sleep(0.3)

    def stop(self):
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.proc = None


@pytest.fixture(scope="module")
def kiln_server(tmp_path_factory):
    if not (ROOT / "main.py").exists():
        pytest.skip("main.py is not in the repository yet")
    server = KilnProcess(tmp_path_factory.mktemp("kiln"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def live_editor(browser, kiln_server):
    """The editor served by the real server, in a fresh browser context."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10000)
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("response", lambda r: errors.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
    page.goto(kiln_server.url + "/")
    page.wait_for_selector("body[data-ready=true]", timeout=20000)
    page.wait_for_function("() => app.api.connected")
    yield Editor(page, None, errors)
    context.close()


def test_first_load_opens_the_shipped_default_workflow_without_console_errors(live_editor):
    if not (ROOT / "workflows" / "default.json").exists():
        pytest.skip("workflows/default.json is not in the repository yet")
    types = live_editor.js("() => [...app.graph.nodes.values()].map(n => n.type)")
    assert {"CheckpointLoaderSimple", "KSampler", "SaveImage"} <= set(types)
    assert not live_editor.js("() => [...app.graph.nodes.values()].some(n => n.missing && !n.subgraph)")
    assert live_editor.page.locator("#connection").inner_text() == "connected"
    live_editor.screenshot("e2e-default-workflow.png")
    assert live_editor.console_errors == []


def require_demo_model(editor):
    if not DEMO_CHECKPOINT.exists():
        pytest.skip(f"the bundled demo checkpoint {DEMO_CHECKPOINT.relative_to(ROOT)} is not in the repository yet")
    missing = editor.js("() => ['KSampler', 'VAEDecode', 'SaveImage', 'EmptyLatentImage'].filter(t => !(t in app.defs))")
    if missing:
        pytest.skip(f"the server does not provide {missing} yet")


def test_a_graph_built_in_the_editor_runs_on_the_demo_model_and_its_png_reopens_the_workflow(live_editor, kiln_server):
    require_demo_model(live_editor)
    n = build_txt2img(live_editor, positive="a red circle on a white background, center", negative="")
    assert live_editor.widget_value(n["ck"], "ckpt_name") == DEMO_CHECKPOINT.name
    live_editor.set_widget_text(n["lat"], "width", "64")
    live_editor.set_widget_text(n["lat"], "height", "64")
    live_editor.js("() => { window.__events = []; app.api.on(m => window.__events.push(m.type)); }")
    queued = live_editor.js("() => app.serialize().nodes.map(n => [n.id, n.type, n.widgets_values])")
    live_editor.page.locator("#graph-canvas").focus()
    live_editor.page.keyboard.press("Control+Enter")
    live_editor.page.wait_for_function("(id) => app.view.runtime.get(String(id))?.images?.[0]?.complete", arg=n["save"], timeout=120000)
    events = live_editor.js("() => window.__events")
    assert {"execution_start", "executing", "progress", "b_preview", "executed", "execution_success"} <= set(events)
    live_editor.page.click("#panel-button")
    assert live_editor.page.locator("#gallery img").count() == 1
    live_editor.screenshot("e2e-finished-image.png")
    (png,) = (kiln_server.dirs / "output").glob("*.png")
    assert live_editor.console_errors == []

    live_editor.page.click("#clear-button")
    live_editor.drop_file(png.read_bytes(), png.name, "image/png")
    reopened = live_editor.js("() => app.serialize().nodes.map(n => [n.id, n.type, n.widgets_values])")
    assert reopened == queued, "the PNG written by SaveImage carries the workflow as it was queued"


def test_a_real_validation_error_outlines_the_failing_node(live_editor):
    require_demo_model(live_editor)
    ck = live_editor.js("() => [...app.graph.nodes.values()].find(n => n.type === 'CheckpointLoaderSimple').id")
    live_editor.js("(id) => { app.graph.nodes.get(id).widget('ckpt_name').value = 'no-such-model.safetensors'; }", ck)
    live_editor.page.click("#queue-button")
    live_editor.page.wait_for_function("(id) => app.view.runtime.get(String(id))?.errors?.length", arg=ck)
    assert "no-such-model.safetensors" in " ".join(live_editor.js("(id) => app.view.runtime.get(String(id)).errors", ck))
    live_editor.screenshot("e2e-validation-error.png")


def test_the_example_packs_web_extension_loads_and_styles_its_node(live_editor):
    assert "kiln.example_pack" in live_editor.js("() => app.extensions.map(e => e.name)")
    node = live_editor.add_by_search("KilnExampleRepeatText", (700, 820))
    assert live_editor.js("(id) => app.graph.nodes.get(id).type", node) == "KilnExampleRepeatText"
    assert live_editor.js("(id) => app.graph.nodes.get(id).color", node) == "#335"


def test_the_editor_reconnects_by_itself_when_the_server_restarts(live_editor, kiln_server):
    kiln_server.stop()
    live_editor.page.wait_for_function("() => !app.api.connected", timeout=10000)
    assert live_editor.page.locator("#connection").inner_text().startswith("reconnecting")
    kiln_server.start()
    live_editor.page.wait_for_function("() => app.api.connected", timeout=30000)
    assert live_editor.page.locator("#connection").inner_text() == "connected"
    assert "Reconnected to the server" in live_editor.page.locator("#toasts").inner_text()
