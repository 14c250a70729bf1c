"""Durability: kill -9 `main.py serve` mid-run, start it again, and every queued prompt completes exactly once."""

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

QUEUE_DEPTH = 100   # prompts of 0.2 s each: the kill lands with most of them still queued


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _call(url, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(url + path, data=data), timeout=10) as response:
        return json.loads(response.read() or b"null")


def _start(tmp_path, port):
    """`main.py serve` on `port` with tmp_path/base as base directory (its custom_nodes/ holds the pack)."""
    process = subprocess.Popen([sys.executable, "main.py", "serve", "--port", str(port), "--base-directory",
                                str(tmp_path / "base")], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
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
    pack_dir = tmp_path / "base" / "custom_nodes" / "slowpack"
    pack_dir.mkdir(parents=True)
    (pack_dir / "__init__.py").write_text(SLOW_PACK)
    port = _free_port()
    process, url = _start(tmp_path, port)
    try:
        ids = [_call(url, "/prompt", {"prompt": {"1": {"class_type": "SlowEcho",
                                                       "inputs": {"value": i, "seconds": 0.2}}}})["prompt_id"]
               for i in range(QUEUE_DEPTH)]
        _wait(lambda: len(_call(url, "/history")) >= 10 and _call(url, "/queue")["queue_running"])
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    finished_before = set(_call_safe_history(tmp_path))
    assert 10 <= len(finished_before) < QUEUE_DEPTH

    process, url = _start(tmp_path, port)
    try:
        _wait(lambda: _call(url, "/prompt")["exec_info"]["queue_remaining"] == 0, timeout=120)
        time.sleep(0.3)
        history = _call(url, "/history")
        assert sorted(history) == sorted(ids)
        assert all(entry["status"]["status_str"] == "success" for entry in history.values())
        assert {entry["outputs"]["1"]["text"][0] for entry in history.values()} == {str(i) for i in range(QUEUE_DEPTH)}
        assert _call(url, "/queue") == {"queue_running": [], "queue_pending": []}
        assert _call(url, "/prompt", {"prompt": {"1": {"class_type": "SlowEcho", "inputs": {"value": 1, "seconds": 0}}}}
                     )["number"] >= QUEUE_DEPTH
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
