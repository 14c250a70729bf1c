"""Real aiohttp client helpers for the API tests (sync wrappers around one request each)."""

import asyncio
import json
import time
from dataclasses import dataclass

import aiohttp


@dataclass
class Reply:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


async def _request(url: str, method: str, path: str, **kwargs) -> Reply:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url + path, allow_redirects=False, **kwargs) as response:
            return Reply(response.status, dict(response.headers), await response.read())


def http(server, method: str, path: str, **kwargs) -> Reply:
    """One HTTP request with a fresh aiohttp session."""
    return asyncio.run(_request(server.url, method, path, **kwargs))


def get(server, path: str, **kwargs) -> Reply:
    return http(server, "GET", path, **kwargs)


def post(server, path: str, body=None, **kwargs) -> Reply:
    if body is not None:
        kwargs["json"] = body
    return http(server, "POST", path, **kwargs)


def chain(value: int = 3, seconds: float | None = None, steps: int = 4) -> dict:
    """TestConst -> [TestSlow ->] TestOutput."""
    prompt = {"1": {"class_type": "TestConst", "inputs": {"value": value}}}
    if seconds is None:
        prompt["2"] = {"class_type": "TestOutput", "inputs": {"value": ["1", 0]}}
    else:
        prompt["3"] = {"class_type": "TestSlow", "inputs": {"value": ["1", 0], "seconds": seconds, "steps": steps}}
        prompt["2"] = {"class_type": "TestOutput", "inputs": {"value": ["3", 0]}}
    return prompt


def queue_prompt(server, prompt: dict, **fields) -> str:
    reply = post(server, "/prompt", {"prompt": prompt, **fields})
    assert reply.status == 200, reply.body
    return reply.json()["prompt_id"]


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02):
    """Poll until predicate() is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


def wait_history(server, prompt_id: str, timeout: float = 10.0) -> dict:
    return wait_for(lambda: get(server, f"/history/{prompt_id}").json().get(prompt_id), timeout)


def wait_idle(server, timeout: float = 10.0) -> None:
    wait_for(lambda: get(server, "/prompt").json()["exec_info"]["queue_remaining"] == 0, timeout)
