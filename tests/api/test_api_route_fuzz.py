"""A bounded, seeded fuzz over every registered route and the websocket.

About 2,000 malformed requests: bad JSON, wrong types, links to missing nodes, cycles, huge ints,
NaN, deep nesting, a 10 MB body, bad multipart and bad query values. No 5xx, no reply slower than
5 s, and afterwards the prompt queued before the fuzz still completes and a normal prompt runs.
"""

import asyncio
import json
import random
import re
import time

import aiohttp

from apitest_client import chain, get, queue_prompt, wait_history

HUGE = 10 ** 30
FALSY = [None, False, 0, "", [], {}]   # a true `clear` or an /interrupt is a valid command, not malformed input
SCALARS = [None, True, 0, -1, HUGE, -HUGE, 1.5, "", "x", "../../etc/passwd", "\x00", "🙂" * 50]


def _deep(depth: int):
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def _prompts(rng: random.Random) -> list:
    return [
        {"1": {"class_type": "TestOutput", "inputs": {"value": ["9", 0]}}},              # missing node
        {"1": {"class_type": "TestSlow", "inputs": {"value": ["2", 0]}},
         "2": {"class_type": "TestSlow", "inputs": {"value": ["1", 0]}},
         "3": {"class_type": "TestOutput", "inputs": {"value": ["1", 0]}}},                # cycle
        {"1": {"class_type": "TestConst", "inputs": {"value": HUGE}},
         "2": {"class_type": "TestOutput", "inputs": {"value": ["1", 0]}}},                # huge int
        {"1": {"class_type": "TestConst", "inputs": {"value": rng.choice(SCALARS)}},
         "2": {"class_type": "TestOutput", "inputs": {"value": ["1", rng.choice([-1, 7, "0", None])]}}},
        {"1": {"class_type": rng.choice(["Nope", "", 5, None]), "inputs": rng.choice([{}, [], "x"])}},
        rng.choice(SCALARS), _deep(rng.choice([50, 500])) if rng.random() < 0.5 else {"1": _deep(400)},
    ]


def _bodies(rng: random.Random) -> list[tuple[bytes, str]]:
    """(body, content type) pairs: JSON of wrong shapes, broken JSON, NaN, deep nesting, multipart junk."""
    shapes = [{"prompt": p, "extra_data": rng.choice([{}, "x", {"extra_pnginfo": rng.choice(SCALARS)}]),
               "number": rng.choice(SCALARS), "client_id": rng.choice(SCALARS),
               "delete": rng.choice([SCALARS, "x", [None]]), "clear": rng.choice(FALSY)} for p in _prompts(rng)]
    bodies = [(json.dumps(s).encode(), "application/json") for s in shapes]
    bodies += [(b'{"prompt": NaN}', "application/json"), (b'{"prompt": {"1": Infinity}}', "application/json"),
               (b"{" * 20000, "application/json"), (b'{"a": ', "application/json"), (b"\xff\xfe", "application/json"),
               (b"[" * 10000 + b"1" + b"]" * 10000, "application/json"), (b"x=1", "application/x-www-form-urlencoded"),
               (b"--b\r\n\r\n", "multipart/form-data; boundary=b"), (b"junk", "multipart/form-data"),
               (rng.randbytes(64), rng.choice(["application/json", "text/plain", "multipart/form-data; boundary=z"]))]
    return bodies


def _query_values(rng: random.Random) -> list[str]:
    return ["", "-1", str(HUGE), "-" + str(HUGE), "1e309", "nan", "abc", "1" * 5000, "%00", "true",
            str(rng.randint(-5, 5))]


def _routes(app) -> list[tuple[str, str]]:
    found = set()
    for resource in app.router.resources():
        for route in resource:
            if route.method not in ("HEAD", "OPTIONS") and resource.canonical:
                found.add((route.method, resource.canonical))
    return sorted(found)


def _fill(canonical: str, rng: random.Random) -> str:
    return re.sub(r"\{[^}]+\}", lambda _: rng.choice(["x", "1", "%00", "..%2f", "a" * 300, "missing.json"]),
                  canonical)


async def _fuzz_http(url: str, requests: list[tuple[str, str, bytes | None, str | None]]) -> list[str]:
    problems = []
    connector = aiohttp.TCPConnector(limit=8)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(method, path, body, content_type):
            headers = {"Content-Type": content_type} if content_type else {}
            start = time.monotonic()
            try:
                async with session.request(method, url + path, data=body, headers=headers,
                                           timeout=aiohttp.ClientTimeout(total=10)) as response:
                    await response.read()
                    if response.status >= 500:
                        problems.append(f"{method} {path[:120]} -> {response.status}")
            except asyncio.TimeoutError:
                problems.append(f"{method} {path[:120]} hung")
            if time.monotonic() - start > 5:
                problems.append(f"{method} {path[:120]} took {time.monotonic() - start:.1f} s")
        for i in range(0, len(requests), 32):
            await asyncio.gather(*(one(*r) for r in requests[i:i + 32]))
    return problems


async def _fuzz_websocket(url: str, rng: random.Random) -> None:
    messages = ["", "{", "null", json.dumps({"type": "feature_flags", "data": rng.choice(SCALARS)}),
                json.dumps({"type": rng.choice(SCALARS), "data": {}}), "[" * 5000 + "]" * 5000, "x" * 100000]
    async with aiohttp.ClientSession() as session:
        for query in ("", "?clientId=" + "a" * 5000, "?clientId=%00"):
            async with session.ws_connect(url + "/ws" + query) as ws:
                for message in messages:
                    await ws.send_str(message)
                await ws.send_bytes(rng.randbytes(256))
                await ws.close()


def test_two_thousand_malformed_requests_never_answer_5xx_and_lose_nothing(start_server):
    server = start_server()
    rng = random.Random(14)
    marker = queue_prompt(server, chain(41, seconds=1.0, steps=2), prompt_id="queued-before-fuzz")
    requests = []
    for method, canonical in _routes(server.app):
        if canonical.endswith(("/ws", "/interrupt")):
            continue
        for body, content_type in _bodies(rng):
            if method in ("POST", "PUT", "PATCH", "DELETE"):
                requests.append((method, _fill(canonical, rng), body, content_type))
        values = _query_values(rng)
        names = ["max_items", "offset", "limit", "filename", "type", "subfolder", "preview", "channel", "status",
                 "sort_by", "sort_order", "dir", "recurse", "full_info", "path", "overwrite"]
        for value in values:
            requests.append((method, f"{_fill(canonical, rng)}?{rng.choice(names)}={value}", None, None))
    requests.append(("POST", "/prompt", b"{" + b" " * (10 * 1024 * 1024) + b"}", "application/json"))
    rng.shuffle(requests)
    assert 1500 <= len(requests) <= 3000
    problems = asyncio.run(_fuzz_http(server.url, requests))
    asyncio.run(_fuzz_websocket(server.url, rng))
    assert not problems, problems[:20]
    assert wait_history(server, marker, timeout=60)["status"]["status_str"] == "success"
    after = queue_prompt(server, chain(42))
    assert wait_history(server, after, timeout=60)["outputs"]["2"]
    assert get(server, "/queue").status == 200
