"""Durability: kill -9 the server mid-run, start it again, and every queued prompt completes exactly once."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SLOW_PACK = textwrap.dedent('''
    import time

    class SlowEcho:
        CATEGORY = "testing"
        RETURN_TYPES = ()
        FUNCTION = "run"
        OUTPUT_NODE = True

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"value": ("INT", {"default": 0, "min": 0, "max": 1000}),
                                 "seconds": ("FLOAT", {"default": 0.1, "min": 0.0, "max": 10.0})}}

        def run(self, value, seconds):
            time.sleep(seconds)
            return {"ui": {"text": [str(value)]}}

    NODE_CLASS_MAPPINGS = {"SlowEcho": SlowEcho}
''')

LAUNCHER = textwrap.dedent('''
    import sys
    from engine.config import RuntimeConfig
    from engine.executor import Executor
    from engine.paths import Paths
    from engine.registry import build_registry
    from engine.server import run_server

    config = RuntimeConfig(base_directory=sys.argv[1], port=int(sys.argv[2]))
    paths = Paths.from_config(config)
    registry = build_registry(paths, builtins=False, custom_node_dirs=[sys.argv[3]])
    run_server(config, registry, Executor(registry, paths=paths, config=config))
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _call(url, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(url + path, data=data), timeout=10) as response:
        return json.loads(response.read() or b"null")


def _start(tmp_path, port, pack_dir):
    process = subprocess.Popen([sys.executable, str(tmp_path / "launch.py"), str(tmp_path / "base"), str(port),
                                str(pack_dir)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": REPO})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            _call(url, "/queue")
            return process, url
        except OSError:
            if process.poll() is not None:
                raise AssertionError(process.stderr.read().decode())
            time.sleep(0.1)
    process.kill()
    raise AssertionError("server did not start")


def _wait(predicate, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_prompts_survive_a_kill_9_and_each_completes_exactly_once(tmp_path):
    pack_dir = tmp_path / "custom_nodes"
    (pack_dir / "slowpack").mkdir(parents=True)
    (pack_dir / "slowpack" / "__init__.py").write_text(SLOW_PACK)
    (tmp_path / "launch.py").write_text(LAUNCHER)
    port = _free_port()
    process, url = _start(tmp_path, port, pack_dir)
    try:
        ids = [_call(url, "/prompt", {"prompt": {"1": {"class_type": "SlowEcho",
                                                       "inputs": {"value": i, "seconds": 0.15}}}})["prompt_id"]
               for i in range(20)]
        _wait(lambda: len(_call(url, "/history")) >= 3 and _call(url, "/queue")["queue_running"])
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    finished_before = set(_call_safe_history(tmp_path))
    assert 3 <= len(finished_before) < 20

    process, url = _start(tmp_path, port, pack_dir)
    try:
        history = _wait(lambda: (h := _call(url, "/history")) and len(h) == 20 and h)
        time.sleep(0.3)
        history = _call(url, "/history")
        assert sorted(history) == sorted(ids)
        assert all(entry["status"]["status_str"] == "success" for entry in history.values())
        assert {entry["outputs"]["1"]["text"][0] for entry in history.values()} == {str(i) for i in range(20)}
        assert _call(url, "/queue") == {"queue_running": [], "queue_pending": []}
        assert _call(url, "/prompt", {"prompt": {"1": {"class_type": "SlowEcho", "inputs": {"value": 1, "seconds": 0}}}}
                     )["number"] >= 20
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)


def _call_safe_history(tmp_path):
    """prompt ids already in the durable history file after the kill."""
    import sqlite3

    db = sqlite3.connect(tmp_path / "base" / "user" / "kiln_queue.sqlite3")
    try:
        return [row[0] for row in db.execute("SELECT prompt_id FROM history")]
    finally:
        db.close()
