"""A workflow of test nodes over a real WebSocket: the exact message sequence of api.md / execution.md §9."""

import asyncio
import json

import aiohttp

from apitest_client import chain, wait_idle


async def _collect(ws, prompt_id, binary=None):
    """Text messages until this prompt's final `executing {node: null}`."""
    seen = []
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.BINARY:
            if binary is not None:
                binary.append(msg.data)
            continue
        message = json.loads(msg.data)
        seen.append(message)
        data = message["data"]
        if message["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
            return seen
    return seen


def _shape(messages):
    """(type, node or queue_remaining) pairs: the sequence without ids and timestamps."""
    out = []
    for m in messages:
        data = m["data"]
        if m["type"] == "status":
            out.append(("status", data["status"]["exec_info"]["queue_remaining"]))
        elif m["type"] == "progress_state":
            out.append(("progress_state", {k: v["state"] for k, v in data["nodes"].items()}))
        elif m["type"] in ("executing", "executed"):
            out.append((m["type"], data["node"]))
        elif m["type"] == "progress":
            out.append(("progress", data["value"], data["max"]))
        else:
            out.append((m["type"],))
    return out


def test_client_sees_the_exact_message_sequence_of_a_normal_run(server):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(server.url + "/ws?clientId=alice") as ws:
                first = json.loads((await ws.receive()).data)
                assert first == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}},
                                                            "sid": "alice"}}
                async with session.post(server.url + "/prompt",
                                        json={"prompt": chain(5), "client_id": "alice"}) as r:
                    prompt_id = (await r.json())["prompt_id"]
                return prompt_id, await asyncio.wait_for(_collect(ws, prompt_id), 10)

    prompt_id, messages = asyncio.run(scenario())
    assert _shape(messages) == [
        ("status", 1), ("status", 1), ("execution_start",), ("execution_cached",),
        ("progress_state", {"1": "running"}), ("executing", "1"), ("progress_state", {"1": "finished"}),
        ("progress_state", {"1": "finished", "2": "running"}), ("executing", "2"), ("executed", "2"),
        ("progress_state", {"1": "finished", "2": "finished"}), ("execution_success",),
        ("status", 0), ("executing", None)]
    executed = next(m for m in messages if m["type"] == "executed")["data"]
    assert executed == {"node": "2", "display_node": "2", "output": {"text": ["5"]}, "prompt_id": prompt_id}
    assert messages[-1]["data"] == {"node": None, "prompt_id": prompt_id}
    assert all(isinstance(m["data"]["timestamp"], int) for m in messages
               if m["type"] in ("execution_start", "execution_success"))


def test_progress_is_routed_only_to_the_prompts_own_client(server):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(server.url + "/ws?clientId=alice") as alice, \
                    session.ws_connect(server.url + "/ws?clientId=bob") as bob:
                await alice.receive()
                await bob.receive()
                async with session.post(server.url + "/prompt",
                                        json={"prompt": chain(1, seconds=0.05), "client_id": "alice"}) as r:
                    prompt_id = (await r.json())["prompt_id"]
                alice_seen = await asyncio.wait_for(_collect(alice, prompt_id), 10)
                await asyncio.sleep(0.1)
                bob_seen = []
                while True:
                    try:
                        msg = await asyncio.wait_for(bob.receive(), 0.2)
                    except asyncio.TimeoutError:
                        break
                    bob_seen.append(json.loads(msg.data))
                return alice_seen, bob_seen

    alice_seen, bob_seen = asyncio.run(scenario())
    assert [m for m in _shape(alice_seen) if m[0] == "progress"] == [
        ("progress", 1, 4), ("progress", 2, 4), ("progress", 3, 4), ("progress", 4, 4)]
    assert {m["type"] for m in bob_seen} == {"status"}


def test_prompt_without_client_id_broadcasts_progress_but_not_its_node_events(server):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(server.url + "/ws") as ws:
                sid = json.loads((await ws.receive()).data)["data"]["sid"]
                async with session.post(server.url + "/prompt", json={"prompt": chain(1, seconds=0.02, steps=2)}) as r:
                    assert r.status == 200
                seen = []
                while True:
                    message = json.loads((await asyncio.wait_for(ws.receive(), 10)).data)
                    seen.append(message)
                    if message["type"] == "status" and message["data"]["status"]["exec_info"]["queue_remaining"] == 0:
                        return sid, seen

    sid, seen = asyncio.run(scenario())
    assert len(sid) == 32
    types = {m["type"] for m in seen}
    assert "progress" in types and "progress_state" in types
    assert not types & {"execution_start", "executing", "executed", "execution_success"}


def test_feature_flags_are_negotiated_with_the_first_client_message(server):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(server.url + "/ws?clientId=c1") as ws:
                await ws.receive()
                await ws.send_str(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
                return json.loads((await asyncio.wait_for(ws.receive(), 5)).data)

    reply = asyncio.run(scenario())
    assert reply == {"type": "feature_flags",
                     "data": {"supports_preview_metadata": True, "max_upload_size": 104857600}}


def test_oversized_websocket_message_closes_the_socket(server):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(server.url + "/ws") as ws:
                await ws.receive()
                await ws.send_str("x" * (2 << 20))
                msg = await asyncio.wait_for(ws.receive(), 5)
                return msg.type

    assert asyncio.run(scenario()) in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
    wait_idle(server)


def test_a_reconnecting_client_is_told_which_node_of_its_prompt_is_running(server):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.post(server.url + "/prompt", json={"prompt": chain(1, seconds=1.0, steps=10),
                                                                   "client_id": "back"}) as r:
                assert r.status == 200
            await asyncio.sleep(0.4)
            async with session.ws_connect(server.url + "/ws?clientId=back") as ws:
                first = json.loads((await ws.receive()).data)
                second = json.loads((await ws.receive()).data)
                return first, second

    first, second = asyncio.run(scenario())
    assert first["data"]["sid"] == "back" and first["data"]["status"]["exec_info"]["queue_remaining"] == 1
    assert second == {"type": "executing", "data": {"node": "3"}}
    wait_idle(server)
