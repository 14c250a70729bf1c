"""Load bench: 50 concurrent clients submit prompts and poll /queue and /history for 30 s; prints JSON.

Reports accepted prompts/s, p50/p99 latency of /prompt, /queue, /history and /object_info (one more
client polls it throughout), and the server's RSS and open file descriptors before and after the load.
Usage: python bench/load.py [--clients 50] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time

import aiohttp

from api import start_server, wait_idle, wait_up


def process_figures(pid: int) -> dict:
    """Resident memory (MB) and open file descriptors of a process, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return {"rss_mb": round(rss_kb / 1024, 1), "open_fds": len(os.listdir(f"/proc/{pid}/fd"))}


def percentiles(times: list[float]) -> dict:
    ordered = sorted(times)
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 2)   # noqa: E731
    return {"requests": len(ordered), "p50_ms": pick(0.5), "p99_ms": pick(0.99)}


async def client(session, url: str, index: int, until: float, times: dict[str, list[float]], accepted: list[int]):
    """Submit one prompt, then poll /queue and /history, until the deadline."""
    n = 0
    while time.perf_counter() < until:
        n += 1
        body = {"prompt": {"1": {"class_type": "BenchEcho", "inputs": {"value": index * 1_000_000 + n}}}}
        for method, path in (("POST", "/prompt"), ("GET", "/queue"), ("GET", "/history?max_items=5")):
            start = time.perf_counter()
            async with session.request(method, url + path, json=body if method == "POST" else None) as r:
                await r.read()
                if method == "POST" and r.status == 200:
                    accepted.append(1)
            times[path.split("?")[0]].append((time.perf_counter() - start) * 1000)


async def object_info_poller(session, url: str, until: float, times: list[float]) -> None:
    while time.perf_counter() < until:
        start = time.perf_counter()
        async with session.get(url + "/object_info") as r:
            await r.read()
        times.append((time.perf_counter() - start) * 1000)


async def measure(url: str, pid: int, clients: int, seconds: float) -> dict:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await wait_up(session, url)
        for i in range(100):   # warm-up, so "before" is a running server, not a cold one
            async with session.post(url + "/prompt", json={"prompt": {"1": {"class_type": "BenchEcho",
                                                                          "inputs": {"value": i}}}}) as r:
                await r.read()
        await wait_idle(session, url)
        before = process_figures(pid)
        times: dict[str, list[float]] = {"/prompt": [], "/queue": [], "/history": [], "/object_info": []}
        accepted: list[int] = []
        start = time.perf_counter()
        until = start + seconds
        await asyncio.gather(object_info_poller(session, url, until, times["/object_info"]),
                             *(client(session, url, i, until, times, accepted) for i in range(clients)))
        elapsed = time.perf_counter() - start
        await wait_idle(session, url)
    await asyncio.sleep(1.0)   # the server closes the keep-alive sockets of the ended session
    after = process_figures(pid)
    return {"clients": clients, "seconds": round(elapsed, 1), "accepted_prompts": len(accepted),
            "accepted_prompts_per_s": round(len(accepted) / elapsed, 1),
            "latency": {path: percentiles(values) for path, values in times.items()},
            "server_before": before, "server_after": after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        process, url = start_server(work)
        try:
            result = asyncio.run(measure(url, process.pid, args.clients, args.seconds))
        finally:
            process.terminate()
            process.wait(20)
    print(json.dumps({"bench": "load", "cpu_count": os.cpu_count(), **result}))


if __name__ == "__main__":
    main()
