"""The engine layer stays torch-free: importing every engine module (and running a pack) never loads torch."""
from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = r'''
import importlib, json, pkgutil, sys, tempfile
import engine
mods = sorted(m.name for m in pkgutil.iter_modules(engine.__path__, "engine."))
for m in mods:
    if m != "engine.server":
        importlib.import_module(m)
aiohttp_without_server = "aiohttp" in sys.modules
for m in mods:
    importlib.import_module(m)
nodes_after_import = "nodes" in sys.modules
from engine.paths import Paths
from engine.registry import build_registry
from engine.executor import Executor
reg = build_registry(Paths(tempfile.mkdtemp()), builtins=False, custom_node_dirs=["custom_nodes"])
res = Executor(reg).run("p", {"1": {"class_type": "KilnExampleRepeatText", "inputs": {"text": "a", "times": 2}}})
print(json.dumps({"mods": mods, "torch": "torch" in sys.modules, "status": res.status,
                  "nodes": nodes_after_import, "aiohttp": aiohttp_without_server}))
'''


def test_importing_every_engine_module_and_running_a_pack_never_imports_torch_or_aiohttp():
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    import json

    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert "engine.executor" in report["mods"] and "engine.validate" in report["mods"]
    assert report["status"] == "success"
    assert report["torch"] is False
    assert report["aiohttp"] is False   # only engine/server.py may import aiohttp
    assert report["nodes"] is False   # engine modules never import Kiln's node library


def test_engine_tests_themselves_run_without_torch():
    """The whole engine suite, alone in a fresh interpreter, never imports torch (its conftest checks)."""
    if os.environ.get("KILN_ASSERT_NO_TORCH"):
        return  # this is the subprocess run itself
    env = dict(os.environ, KILN_ASSERT_NO_TORCH="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/engine", "-q", "-x", "-p", "no:cacheprovider"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
