"""ComfyUI's official frontend (pip `comfyui-frontend-package` 1.35.9) boots against Kiln and queues its
default workflow, driven in Debian's Chromium (skipped when either is missing)."""

import importlib.util
import json
import os
from pathlib import Path

import pytest

from apitest_client import get, post, wait_for
from engine.registry import build_registry

CHROMIUM = Path("/usr/bin/chromium")
DEFAULT_GRAPH = {"CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode", "SaveImage"}


def _frontend_root() -> str:
    spec = importlib.util.find_spec("comfyui_frontend_package")
    if spec is None or not CHROMIUM.exists():
        pytest.skip("needs comfyui-frontend-package (test extra) and Debian's chromium")
    return os.path.join(os.path.dirname(spec.origin), "static")


def test_official_frontend_boots_and_queues_its_default_workflow(start_server, base_dir):
    root = _frontend_root()
    sync_api = pytest.importorskip("playwright.sync_api")
    (base_dir / "models" / "checkpoints").mkdir(parents=True)
    (base_dir / "models" / "checkpoints" / "v1-5-pruned-emaonly-fp16.safetensors").write_bytes(b"not a model")
    server = start_server(front_end_root=root, prepare=lambda registry: registry.specs.update(
        build_registry(registry.paths, custom_nodes=False).specs))
    post(server, "/api/settings", {"Comfy.TutorialCompleted": True})
    failures, posted = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.on("response", lambda r: r.status >= 500 and failures.append(r.url))
        page.on("request", lambda r: r.url.endswith("/api/prompt") and r.method == "POST" and posted.append(r.post_data))
        page.goto(server.url + "/")
        page.wait_for_function("() => window.app && window.app.graph && window.app.graph._nodes.length >= 7",
                               timeout=60000)
        assert set(page.evaluate("() => window.app.graph._nodes.map(n => n.type)")) == DEFAULT_GRAPH
        page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
        wait_for(lambda: posted, timeout=30)
        browser.close()
    body = json.loads(posted[0])
    assert {node["class_type"] for node in body["prompt"].values()} == DEFAULT_GRAPH
    entry = wait_for(lambda: next(iter(get(server, "/history").json().values()), None), timeout=60)
    assert entry["prompt"][3]["client_id"] == body["client_id"] and "workflow" in entry["prompt"][3]["extra_pnginfo"]
    assert failures == []
