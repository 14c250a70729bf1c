"""Hypothesis fuzzing of the mutating and file routes: no 5xx, the server stays up, the queue stays usable."""

import json
import os

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from apitest_client import chain, get, http, post, queue_prompt, wait_history
from apitest_server import LiveServer, make_registry
from engine.cache import make_cache
from engine.config import RuntimeConfig
from engine.executor import Executor
from engine.paths import Paths
from engine.server import create_app

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)

NODE = st.fixed_dictionaries({}, optional={
    "class_type": st.sampled_from(["TestConst", "TestOutput", "TestSlow", "TestFail", "Nope"]) | st.text(max_size=8),
    "inputs": st.dictionaries(st.sampled_from(["value", "seconds", "steps", "x"]),
                              JSON_VALUES | st.tuples(st.text(max_size=3), st.integers(-2, 5)).map(list),
                              max_size=3)})

PROMPT_BODIES = st.fixed_dictionaries({}, optional={
    "prompt": st.dictionaries(st.sampled_from(["1", "2", "3"]), NODE, max_size=3) | JSON_VALUES,
    "number": JSON_VALUES, "front": JSON_VALUES, "prompt_id": JSON_VALUES, "client_id": JSON_VALUES,
    "extra_data": JSON_VALUES, "partial_execution_targets": JSON_VALUES})

QUEUE_BODIES = st.fixed_dictionaries({}, optional={"delete": JSON_VALUES, "clear": st.just(False) | st.text(max_size=0)})

RAW = st.binary(max_size=200) | JSON_VALUES.map(lambda v: json.dumps(v).encode())

CONTENT_TYPES = st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded",
                                 "multipart/form-data", "application/json; charset=latin-1", ""])

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the whole file, seeded with a queued marker prompt that fuzzing must not lose."""
    base = tmp_path_factory.mktemp("fuzz")
    for area in ("input", "output", "temp", "user"):
        os.makedirs(base / area)
    config = RuntimeConfig(base_directory=str(base))
    paths = Paths.from_config(config)
    registry = make_registry(paths)
    live = LiveServer(create_app(config, registry, Executor(registry, cache=make_cache("classic"), paths=paths,
                                                            config=config), paths=paths))
    live.marker = queue_prompt(live, chain(77), prompt_id="fuzz-marker")
    yield live
    live.stop()


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])


@FUZZ
@given(body=PROMPT_BODIES | RAW, content_type=CONTENT_TYPES)
def test_random_prompt_bodies_never_cause_a_server_error(server, body, content_type):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = post(server, "/prompt", data=data, headers={"Content-Type": content_type})
    assert reply.status < 500, reply.body
    reply.json()


@FUZZ
@given(route=st.sampled_from(["/queue", "/history", "/interrupt", "/free", "/api/jobs/cancel", "/settings"]),
       body=QUEUE_BODIES.map(lambda v: json.dumps(v).encode()) | RAW, content_type=CONTENT_TYPES)
def test_random_queue_and_history_bodies_never_cause_a_server_error(server, route, body, content_type):
    reply = post(server, route, data=body, headers={"Content-Type": content_type})
    assert reply.status < 500, reply.body


@FUZZ
@given(query=st.dictionaries(st.sampled_from(["filename", "type", "subfolder", "preview", "channel", "max_items",
                                              "offset"]), st.text(max_size=30), max_size=5))
def test_random_view_and_history_queries_never_cause_a_server_error(server, query):
    for route in ("/view", "/history", "/api/jobs"):
        reply = get(server, route, params=query)
        assert reply.status < 500, (route, query, reply.body)


@FUZZ
@given(fields=st.dictionaries(st.sampled_from(["type", "subfolder", "overwrite", "original_ref", "image", "x"]),
                              st.text(max_size=30), max_size=4),
       filename=st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=20), payload=st.binary(max_size=100),
       route=st.sampled_from(["/upload/image", "/upload/mask"]))
def test_random_uploads_never_cause_a_server_error(server, fields, filename, payload, route):
    form = aiohttp.FormData()
    for key, value in fields.items():
        form.add_field(key, value)
    form.add_field("image", payload, filename=filename, content_type="application/octet-stream")
    reply = post(server, route, data=form)
    assert reply.status < 500, reply.body


def test_after_fuzzing_the_server_is_up_and_the_queue_still_runs_prompts(server):
    body = json.dumps({"prompt": {"1": {"class_type": "TestConst", "inputs": {"value": ["x", -1]}}}}).encode()
    for content_type in ("application/json", "text/plain"):
        assert http(server, "POST", "/prompt", data=body, headers={"Content-Type": content_type}).status == 400
    queue = get(server, "/queue").json()
    assert set(queue) == {"queue_running", "queue_pending"}
    assert all(len(item) == 5 for item in queue["queue_running"] + queue["queue_pending"])
    assert wait_history(server, server.marker)["outputs"] == {"2": {"text": ["77"]}}
    post(server, "/queue", {"clear": True})     # anything slow the fuzzer managed to queue
    post(server, "/interrupt", {})
    assert wait_history(server, queue_prompt(server, chain(11)), timeout=60)["outputs"] == {"2": {"text": ["11"]}}
    assert all(entry["status"]["status_str"] in ("success", "error") for entry in get(server, "/history").json().values())
