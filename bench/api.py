"""API benchmark: POST /prompt acceptance rate, one-node end-to-end latency, /object_info latency
(idle and while a node keeps the CPU busy) and 100 WebSocket clients receiving progress; prints JSON.

Usage: python bench/api.py [--prompts 1000] [--latency-runs 200] [--clients 100]
The server runs in its own process (built-in nodes plus a temporary custom-node pack).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import aiohttp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PACK = textwrap.dedent('''
    import time
    from comfy.utils import ProgressBar

    class BenchEcho:
        CATEGORY = "bench"
        RETURN_TYPES = ()
        FUNCTION = "run"
        OUTPUT_NODE = True

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"value": ("INT", {"default": 0, "min": 0, "max": 10**9})}}

        def run(self, value):
            return {"ui": {"text": [str(value)]}}

    class BenchSteps:
        CATEGORY = "bench"
        RETURN_TYPES = ()
        FUNCTION = "run"
        OUTPUT_NODE = True

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
                                 "seconds": ("FLOAT", {"default": 0.01, "min": 0.0, "max": 10.0}),
                                 "busy": ("BOOLEAN", {"default": False}),
                                 "seed": ("INT", {"default": 0, "min": 0, "max": 10**9})}}

        def run(self, steps, seconds, busy, seed):
            bar = ProgressBar(steps)
            for _ in range(steps):
                end = time.perf_counter() + seconds
                if busy:                       # pure-Python work: holds the GIL like a careless node
                    while time.perf_counter() < end:
                        pass
                else:
                    time.sleep(seconds)
                bar.update(1)
            return {"ui": {"text": [str(steps)]}}

    NODE_CLASS_MAPPINGS = {"BenchEcho": BenchEcho, "BenchSteps": BenchSteps}
''')

LAUNCHER = textwrap.dedent('''
    import logging, sys
    from engine.config import RuntimeConfig
    from engine.executor import Executor
    from engine.paths import Paths
    from engine.registry import build_registry
    from engine.server import run_server

    logging.basicConfig(level=logging.ERROR)
    config = RuntimeConfig(base_directory=sys.argv[1], port=int(sys.argv[2]))
    paths = Paths.from_config(config)
    registry = build_registry(paths, custom_node_dirs=[sys.argv[3]])
    run_server(config, registry, Executor(registry, paths=paths, config=config))
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(work: str) -> tuple[subprocess.Popen, str]:
    """Start a server process in `work`; return it and its URL once it answers."""
    pack = os.path.join(work, "custom_nodes", "bench_pack")
    os.makedirs(pack)
    with open(os.path.join(pack, "__init__.py"), "w") as f:
        f.write(PACK)
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-c", LAUNCHER, os.path.join(work, "base"), str(port),
                                os.path.join(work, "custom_nodes")], cwd=REPO,
                               env={**os.environ, "PYTHONPATH": REPO})
    return process, f"http://127.0.0.1:{port}"


async def wait_up(session: aiohttp.ClientSession, url: str) -> None:
    for _ in range(600):
        try:
            async with session.get(url + "/queue") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("server did not start")


async def wait_idle(session, url) -> None:
    while True:
        async with session.get(url + "/prompt") as r:
            if (await r.json())["exec_info"]["queue_remaining"] == 0:
                return
        await asyncio.sleep(0.05)


async def accept_rate(session, url, n: int, concurrency: int = 32) -> dict:
    """Prompts per second answered 200 by POST /prompt (each one durably queued first)."""
    counter = iter(range(n))
    statuses = []

    async def poster():
        for i in counter:
            body = {"prompt": {"1": {"class_type": "BenchEcho", "inputs": {"value": 10_000_000 + i}}}}
            async with session.post(url + "/prompt", json=body) as r:
                statuses.append(r.status)
                await r.read()

    start = time.perf_counter()
    await asyncio.gather(*(poster() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    await wait_idle(session, url)
    return {"prompts": n, "accepted": statuses.count(200), "seconds": round(elapsed, 3),
            "prompts_per_s": round(n / elapsed, 1), "concurrency": concurrency}


async def end_to_end(session, url, runs: int) -> dict:
    """POST a one-node prompt and wait for its final `executing {node: null}` on the WebSocket."""
    times = []
    async with session.ws_connect(url + "/ws?clientId=bench-e2e") as ws:
        await ws.receive()
        for i in range(runs):
            start = time.perf_counter()
            body = {"prompt": {"1": {"class_type": "BenchEcho", "inputs": {"value": i}}}, "client_id": "bench-e2e"}
            async with session.post(url + "/prompt", json=body) as r:
                prompt_id = (await r.json())["prompt_id"]
            while True:
                msg = json.loads((await ws.receive()).data)
                data = msg["data"]
                if msg["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                    break
            times.append((time.perf_counter() - start) * 1000)
    return {"runs": runs, "median_ms": round(statistics.median(times), 2),
            "p95_ms": round(sorted(times)[int(len(times) * 0.95) - 1], 2)}


async def latency(session, url, path: str, runs: int) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        async with session.get(url + path) as r:
            size = len(await r.read())
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 2), size


async def object_info(session, url) -> dict:
    """/object_info idle, then /object_info and /queue while a GIL-holding node runs."""
    async with session.get(url + "/object_info") as r:
        nodes = len(await r.json())
    idle, size = await latency(session, url, "/object_info", 30)
    body = {"prompt": {"1": {"class_type": "BenchSteps",
                             "inputs": {"steps": 40, "seconds": 0.05, "busy": True, "seed": 1}}}}
    async with session.post(url + "/prompt", json=body) as r:
        await r.read()
    await asyncio.sleep(0.2)
    busy, _ = await latency(session, url, "/object_info", 20)
    queue_busy, _ = await latency(session, url, "/queue", 20)
    await wait_idle(session, url)
    return {"nodes": nodes, "bytes": size, "median_ms": idle, "median_ms_while_busy_node": busy,
            "queue_median_ms_while_busy_node": queue_busy}


async def many_clients(session, url, clients: int, steps: int = 20) -> dict:
    """`clients` sockets; one prompt without client_id broadcasts progress to all of them."""
    sockets = [await session.ws_connect(url + "/ws") for _ in range(clients)]   # needs an unlimited connector
    for ws in sockets:
        await ws.receive()

    async def count(ws):
        seen = 0
        while seen < steps:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            if json.loads(msg.data)["type"] == "progress":
                seen += 1
        return seen, time.perf_counter()

    start = time.perf_counter()
    body = {"prompt": {"1": {"class_type": "BenchSteps",
                             "inputs": {"steps": steps, "seconds": 0.01, "busy": False, "seed": 2}}}}
    async with session.post(url + "/prompt", json=body) as r:
        await r.read()
    results = await asyncio.wait_for(asyncio.gather(*(count(ws) for ws in sockets)), 60)
    for ws in sockets:
        await ws.close()
    return {"clients": clients, "progress_messages_each": steps,
            "clients_with_all_progress": sum(1 for seen, _ in results if seen == steps),
            "seconds_until_last_client_done": round(max(t for _, t in results) - start, 3)}


async def measure(url: str, args) -> dict:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await wait_up(session, url)
        return {"accept": await accept_rate(session, url, args.prompts),
                "end_to_end_one_node": await end_to_end(session, url, args.latency_runs),
                "object_info": await object_info(session, url),
                "websocket_fanout": await many_clients(session, url, args.clients)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--latency-runs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        process, url = start_server(work)
        try:
            result = asyncio.run(measure(url, args))
        finally:
            process.terminate()
            process.wait(20)
    targets = {"prompts_per_s": ">= 500", "end_to_end_median_ms": "<= 10", "queue_ms_while_busy": "<= 50"}
    print(json.dumps({"bench": "api", "cpu_count": os.cpu_count(), "targets": targets, **result}))


if __name__ == "__main__":
    main()
