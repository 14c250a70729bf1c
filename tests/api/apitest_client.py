"""Real aiohttp client helpers for the API tests (sync wrappers around one request each)."""

import asyncio
import io
import json
import struct
import time
import zlib
from dataclasses import dataclass

import aiohttp
from PIL import Image


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


def png_bytes(size=(8, 6), color=(200, 30, 30, 255)) -> bytes:
    """A small solid RGBA PNG."""
    buf = io.BytesIO()
    Image.new("RGBA", size, color).save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width=100000, height=100000) -> bytes:
    """A tiny PNG whose header declares a huge image."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def upload(server, data: bytes, filename="a.png", route="/upload/image", **fields) -> Reply:
    """Multipart upload of `data` as the `image` part plus form fields."""
    form = aiohttp.FormData()
    for key, value in fields.items():
        form.add_field(key, value)
    form.add_field("image", data, filename=filename, content_type="application/octet-stream")
    return post(server, route, data=form)
