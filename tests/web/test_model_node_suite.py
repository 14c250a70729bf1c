"""Runs the graph-model tests (`tests/web/*.test.mjs`) with `node --test`, so `pytest` covers them too."""

import shutil
import subprocess

import pytest

from webtools import ROOT


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_the_graph_model_node_tests_pass():
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "web").glob("*.test.mjs"))
    proc = subprocess.run(["node", "--test", *files], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "# fail 0" in proc.stdout
