"""Binary preview frames (both layouts, rate-limited), slow clients, custom-node routes, extensions, send_sync."""

import asyncio
import json
import struct
import time

import aiohttp
from aiohttp import web

from apitest_client import get, post, queue_prompt, wait_history


def _preview_prompt(steps, pause):
    return {"1": {"class_type": "TestConst", "inputs": {"value": 1}},
            "2": {"class_type": "TestPreview", "inputs": {"value": ["1", 0], "steps": steps, "pause": pause}},
            "3": {"class_type": "TestOutput", "inputs": {"value": ["2", 0]}}}


async def _run_collecting(server, sid, prompt, flags=None):
    """Queue `prompt` for `sid` and return (text messages, binary frames) until it finishes."""
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url}/ws?clientId={sid}") as ws:
            await ws.receive()
            if flags is not None:
                await ws.send_str(json.dumps({"type": "feature_flags", "data": flags}))
                await ws.receive()
            async with session.post(server.url + "/prompt", json={"prompt": prompt, "client_id": sid}) as r:
                prompt_id = (await r.json())["prompt_id"]
            texts, frames, order = [], [], []
            while True:
                msg = await asyncio.wait_for(ws.receive(), 10)
                if msg.type == aiohttp.WSMsgType.BINARY:
                    frames.append(msg.data)
                    order.append(("binary", struct.unpack(">I", msg.data[:4])[0]))
                    continue
                message = json.loads(msg.data)
                texts.append(message)
                order.append(("text", message["type"]))
                if message["type"] == "executing" and message["data"]["node"] is None:
                    return prompt_id, texts, frames, order


def test_clients_without_preview_metadata_get_event_1_jpeg_frames(server):
    _, _, frames, order = asyncio.run(_run_collecting(server, "plain", _preview_prompt(3, 0.15)))
    assert len(frames) == 3
    first = order.index(("binary", 1))
    assert order[first - 2:first] == [("text", "progress"), ("text", "progress_state")]
    event, image_format = struct.unpack(">II", frames[0][:8])
    assert (event, image_format) == (1, 1) and frames[0][8:10] == b"\xff\xd8"


def test_clients_with_preview_metadata_get_event_4_frames_with_node_and_prompt(server):
    prompt_id, _, frames, order = asyncio.run(_run_collecting(server, "meta", _preview_prompt(2, 0.15),
                                                              {"supports_preview_metadata": True}))
    first = order.index(("binary", 4))
    assert order[first - 1:first + 2] == [("text", "progress_state"), ("binary", 4), ("text", "progress")]
    event, length = struct.unpack(">II", frames[0][:8])
    metadata = json.loads(frames[0][8:8 + length])
    assert event == 4 and frames[0][8 + length:10 + length] == b"\xff\xd8"
    assert metadata == {"node_id": "2", "prompt_id": prompt_id, "display_node_id": "2", "parent_node_id": None,
                        "real_node_id": "2", "image_type": "image/jpeg"}


def test_previews_are_rate_limited_and_downscaled_to_the_preview_size(start_server):
    server = start_server(preview_size=256)
    _, texts, frames, _ = asyncio.run(_run_collecting(server, "fast", _preview_prompt(30, 0.0)))
    assert sum(1 for m in texts if m["type"] == "progress") == 30
    stamps = {m["type"]: m["data"]["timestamp"] for m in texts if m["type"] in ("execution_start", "execution_success")}
    run_ms = stamps["execution_success"] - stamps["execution_start"]
    assert 1 <= len(frames) <= run_ms / 100 + 1          # at most 10 previews a second
    from PIL import Image
    import io
    assert Image.open(io.BytesIO(frames[0][8:])).size == (256, 128)


def test_a_client_that_never_reads_does_not_hold_up_execution(server):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            stalled = await session.ws_connect(server.url + "/ws?clientId=stalled")
            started = time.monotonic()
            async with session.post(server.url + "/prompt", json={
                    "prompt": {"1": {"class_type": "TestConst", "inputs": {"value": 2}},
                               "3": {"class_type": "TestSlow", "inputs": {"value": ["1", 0], "seconds": 0.0,
                                                                          "steps": 1000}},
                               "2": {"class_type": "TestOutput", "inputs": {"value": ["3", 0]}}},
                    "client_id": "stalled"}) as r:
                prompt_id = (await r.json())["prompt_id"]
            while True:
                async with session.get(f"{server.url}/history/{prompt_id}") as r:
                    if await r.json():
                        break
                await asyncio.sleep(0.05)
            elapsed = time.monotonic() - started
            await stalled.close()
            return elapsed

    assert asyncio.run(scenario()) < 10


def _install_pack(tmp_path):
    web_dir = tmp_path / "mypack_web"
    (web_dir / "js").mkdir(parents=True)
    (web_dir / "js" / "widget.js").write_text("export const x = 1;")
    (tmp_path / "secret.txt").write_text("secret")

    def prepare(registry):
        bridge = registry.bridge
        bridge.begin_pack()

        @bridge.routes.post("/mypack/do")
        async def do(request):
            bridge.send_sync("mypack.done", {"ok": True})
            return web.json_response({"done": True})

        bridge.commit_pack()
        registry.web_directories["mypack"] = str(web_dir)

    return prepare


def test_custom_node_routes_are_served_twice_and_pass_the_security_gates(start_server, tmp_path):
    server = start_server(prepare=_install_pack(tmp_path))
    assert post(server, "/mypack/do", {}).json() == {"done": True}
    assert post(server, "/api/mypack/do", {}).json() == {"done": True}
    assert post(server, "/mypack/do", {}, headers={"Origin": "http://evil.example"}).status == 403


def test_pack_send_sync_reaches_websocket_clients(start_server, tmp_path):
    server = start_server(prepare=_install_pack(tmp_path))

    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(server.url + "/ws") as ws:
                await ws.receive()
                async with session.post(server.url + "/mypack/do", json={}) as r:
                    assert r.status == 200
                return json.loads((await asyncio.wait_for(ws.receive(), 5)).data)

    assert asyncio.run(scenario()) == {"type": "mypack.done", "data": {"ok": True}}


def test_pack_web_directories_are_listed_and_served_without_escaping(start_server, tmp_path):
    server = start_server(prepare=_install_pack(tmp_path))
    assert get(server, "/api/extensions").json() == ["/extensions/mypack/js/widget.js"]
    script = get(server, "/extensions/mypack/js/widget.js")
    assert script.status == 200 and script.body == b"export const x = 1;"
    assert get(server, "/extensions/mypack/..%2F..%2Fsecret.txt").status == 404
    assert get(server, "/extensions/mypack/nope.js").status == 404


def test_queue_and_object_info_answer_quickly_while_a_node_runs(server):
    running = queue_prompt(server, {"1": {"class_type": "TestConst", "inputs": {"value": 1}},
                                    "3": {"class_type": "TestSlow", "inputs": {"value": ["1", 0], "seconds": 1.0,
                                                                               "steps": 20}},
                                    "2": {"class_type": "TestOutput", "inputs": {"value": ["3", 0]}}})
    time.sleep(0.1)
    timings = []
    for path in ("/queue", "/object_info", "/queue", "/object_info"):
        start = time.perf_counter()
        assert get(server, path).status == 200
        timings.append(time.perf_counter() - start)
    assert get(server, "/queue").json()["queue_running"][0][1] == running
    assert sorted(timings)[1] < 0.25   # generous for a loaded 2-core CI box; the bench reports the real number
    wait_history(server, running)


def test_pack_on_prompt_hooks_may_rewrite_the_body_and_a_failing_hook_is_skipped(start_server):
    def prepare(registry):
        def broken(body):
            raise RuntimeError("hook bug")

        registry.bridge.add_on_prompt_handler(broken)
        registry.bridge.add_on_prompt_handler(lambda body: {**body, "extra_data": {"tagged_by": "hook"}})

    server = start_server(prepare=prepare)
    prompt_id = queue_prompt(server, {"1": {"class_type": "TestConst", "inputs": {"value": 1}},
                                      "2": {"class_type": "TestOutput", "inputs": {"value": ["1", 0]}}})
    assert wait_history(server, prompt_id)["prompt"][3]["tagged_by"] == "hook"
