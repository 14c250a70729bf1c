"""Queue operations, history, jobs, interrupt and POST /prompt answers against a live server."""

import json
import urllib.request

from apitest_client import chain, get, post, queue_prompt, wait_for, wait_history, wait_idle


def _block(server, seconds=5.0):
    """Queue a slow prompt and wait until it runs, so later prompts stay pending."""
    prompt_id = queue_prompt(server, chain(1, seconds=seconds, steps=50))
    wait_for(lambda: get(server, "/queue").json()["queue_running"])
    return prompt_id


def test_a_script_posting_with_urllib_defaults_gets_its_prompt_queued_and_run(server):
    request = urllib.request.Request(server.url + "/prompt", data=json.dumps({"prompt": chain(7)}).encode())
    with urllib.request.urlopen(request) as response:
        reply = json.loads(response.read())
    assert set(reply) == {"prompt_id", "number", "node_errors"} and len(reply["prompt_id"]) == 36
    entry = wait_history(server, reply["prompt_id"])
    assert entry["outputs"] == {"2": {"text": ["7"]}}
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached", "execution_success"]
    number, prompt_id, prompt, extra, outputs = entry["prompt"]
    assert prompt_id == reply["prompt_id"] and outputs == ["2"] and isinstance(extra["create_time"], int)


def test_numbers_count_up_front_jumps_the_queue_and_client_numbers_are_floats(server):
    running = _block(server)
    a = post(server, "/prompt", {"prompt": chain(1)}).json()
    b = post(server, "/prompt", {"prompt": chain(2), "front": True}).json()
    c = post(server, "/prompt", {"prompt": chain(3), "number": 5}).json()
    assert (a["number"], b["number"], c["number"]) == (1, -2, 5.0)
    assert isinstance(c["number"], float)
    queue = get(server, "/queue").json()
    assert [i[1] for i in queue["queue_running"]] == [running]
    assert [i[1] for i in queue["queue_pending"]] == [b["prompt_id"], a["prompt_id"], c["prompt_id"]]
    assert all(len(i) == 5 for i in queue["queue_pending"])
    post(server, "/queue", {"clear": True})
    post(server, "/interrupt", {})


def test_deleting_and_clearing_pending_prompts_leaves_the_running_one_and_no_history(server):
    running = _block(server)
    ids = [queue_prompt(server, chain(i)) for i in range(3)]
    assert post(server, "/queue", {"delete": [ids[0], "unknown"]}).body == b""
    assert [i[1] for i in get(server, "/queue").json()["queue_pending"]] == ids[1:]
    post(server, "/queue", {"clear": True})
    queue = get(server, "/queue").json()
    assert queue["queue_pending"] == [] and [i[1] for i in queue["queue_running"]] == [running]
    assert get(server, "/prompt").json() == {"exec_info": {"queue_remaining": 1}}
    post(server, "/interrupt", {"prompt_id": running})
    wait_history(server, running)
    assert all(get(server, f"/history/{i}").json() == {} for i in ids)


def test_interrupting_the_running_prompt_records_an_interrupted_run_and_a_cancelled_job(server):
    prompt_id = _block(server)
    post(server, "/interrupt", {"prompt_id": "someone-else"})
    assert get(server, "/queue").json()["queue_running"]
    assert post(server, "/interrupt").status == 200
    entry = wait_history(server, prompt_id)
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    assert get(server, f"/api/jobs/{prompt_id}").json()["status"] == "cancelled"


def test_a_stray_interrupt_while_idle_does_not_kill_the_next_prompt(server):
    post(server, "/interrupt", {})
    entry = wait_history(server, queue_prompt(server, chain(2, seconds=0.05)))
    assert entry["status"]["status_str"] == "success"


def test_a_failing_node_is_reported_and_the_next_prompt_runs(server):
    prompt = {"1": {"class_type": "TestConst", "inputs": {"value": 4}},
              "3": {"class_type": "TestFail", "inputs": {"value": ["1", 0]}},
              "2": {"class_type": "TestOutput", "inputs": {"value": ["3", 0]}}}
    entry = wait_history(server, queue_prompt(server, prompt))
    error = entry["status"]["messages"][-1]
    assert error[0] == "execution_error" and error[1]["exception_type"] == "ValueError"
    job = get(server, "/jobs?status=failed").json()["jobs"][0]
    assert job["status"] == "failed" and job["execution_error"]["node_id"] == "3"
    assert wait_history(server, queue_prompt(server, chain(1)))["status"]["completed"] is True


def test_invalid_prompts_get_400_with_the_wire_error_shape_and_nothing_is_queued(server):
    missing = post(server, "/prompt", {"client_id": "x"})
    assert missing.status == 400 and missing.json() == {
        "error": {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided",
                  "extra_info": {}}, "node_errors": {}}
    unknown = post(server, "/prompt", {"prompt": {"1": {"class_type": "Nope", "inputs": {}}}}).json()
    assert unknown["error"]["type"] == "invalid_prompt"
    editor = post(server, "/prompt", {"prompt": {"nodes": [], "links": []}}).json()
    assert editor["error"]["details"] == "This is an editor (UI) workflow; convert it to API format first"
    too_big = post(server, "/prompt", {"prompt": {"1": {"class_type": "TestConst", "inputs": {"value": 5000}},
                                                  "2": {"class_type": "TestOutput", "inputs": {"value": ["1", 0]}}}})
    assert too_big.status == 400 and too_big.json()["node_errors"]["1"]["errors"][0]["type"] == "value_bigger_than_max"
    bad_json = post(server, "/prompt", data=b"{not json", headers={"Content-Type": "application/json"})
    assert bad_json.status == 400 and bad_json.json()["error"]["type"] == "invalid_json"
    assert get(server, "/queue").json() == {"queue_running": [], "queue_pending": []}
    assert get(server, "/history").json() == {}


def test_a_client_chosen_prompt_id_is_kept_and_a_duplicate_in_the_queue_is_refused(server):
    running = _block(server)
    assert queue_prompt(server, chain(1), prompt_id="mine") == "mine"
    again = post(server, "/prompt", {"prompt": chain(1), "prompt_id": "mine"})
    assert again.status == 400 and again.json()["error"]["type"] == "duplicate_prompt_id"
    assert post(server, "/prompt", {"prompt": chain(1), "prompt_id": running}).status == 400
    post(server, "/queue", {"clear": True})
    post(server, "/interrupt", {})


def test_sensitive_extra_data_never_appears_in_queue_history_or_jobs(server):
    running = _block(server)
    prompt_id = queue_prompt(server, chain(1), extra_data={"api_key_comfy_org": "SECRET", "note": "kept"})
    pending = get(server, "/queue").body + get(server, f"/api/jobs/{prompt_id}").body
    assert b"SECRET" not in pending and b"kept" in get(server, "/queue").body
    post(server, "/interrupt", {"prompt_id": running})
    wait_history(server, prompt_id)
    assert b"SECRET" not in get(server, "/history").body + get(server, f"/api/jobs/{prompt_id}").body


def test_history_pagination_follows_max_items_and_offset(server):
    ids = [queue_prompt(server, chain(i)) for i in range(4)]
    wait_history(server, ids[-1])
    assert list(get(server, "/history").json()) == ids
    assert list(get(server, "/history?max_items=2").json()) == ids[2:]
    assert list(get(server, "/history?offset=1").json()) == ids[1:]
    assert list(get(server, "/history?max_items=2&offset=0").json()) == ids[:2]
    assert list(get(server, "/history?max_items=1&offset=2").json()) == [ids[2]]
    assert get(server, "/history?max_items=abc").json() == {"error": "max_items must be an integer"}
    assert get(server, "/history/unknown").json() == {}
    post(server, "/history", {"delete": [ids[0]]})
    assert list(get(server, "/history").json()) == ids[1:]
    post(server, "/history", {"clear": True})
    assert get(server, "/history").json() == {}


def test_jobs_list_filters_sorts_and_paginates_over_queue_and_history(server):
    done = [queue_prompt(server, chain(i)) for i in range(3)]
    wait_history(server, done[-1])
    running = _block(server)
    pending = queue_prompt(server, chain(9))
    everything = get(server, "/api/jobs").json()
    assert [j["id"] for j in everything["jobs"]] == [pending, running, *reversed(done)]
    assert everything["pagination"] == {"offset": 0, "limit": None, "total": 5, "has_more": False}
    active = get(server, "/api/jobs?status=in_progress,pending&limit=200&offset=0").json()
    assert [(j["id"], j["status"]) for j in active["jobs"]] == [(pending, "pending"), (running, "in_progress")]
    assert set(active["jobs"][0]) == {"id", "status", "priority", "create_time", "outputs_count"}
    page = get(server, "/jobs?status=completed&sort_order=asc&limit=2&offset=1").json()
    assert [j["id"] for j in page["jobs"]] == done[1:] and page["pagination"]["has_more"] is False
    single = get(server, f"/jobs/{done[0]}").json()
    assert single["outputs"] == {"2": {"text": ["0"]}} and single["outputs_count"] == 0  # strings are not file items
    assert single["workflow"]["prompt"]["1"]["inputs"]["value"] == 0
    assert get(server, "/jobs?status=bogus").json() == {"error": "Invalid status value(s): bogus. Valid values: "
                                                                 "pending, in_progress, completed, failed, cancelled"}
    assert get(server, "/jobs?limit=0").json() == {"error": "limit must be a positive integer"}
    assert get(server, "/jobs/nope").status == 404
    post(server, "/queue", {"clear": True})
    post(server, "/interrupt", {})


def test_cancelling_jobs_removes_pending_ones_and_interrupts_the_running_one(server):
    running = _block(server)
    pending = queue_prompt(server, chain(2))
    assert post(server, f"/api/jobs/{pending}/cancel").json() == {"id": pending, "cancelled": True}
    assert get(server, "/queue").json()["queue_pending"] == []
    assert post(server, "/api/jobs/cancel", {"job_ids": [running, "ghost"]}).json() == {"cancelled": [running]}
    wait_history(server, running)
    assert post(server, f"/api/jobs/{running}/cancel").status == 409
    assert post(server, "/api/jobs/ghost/cancel").status == 404
    assert post(server, "/api/jobs/cancel", {"job_ids": "x"}).status == 400
    wait_idle(server)


def test_free_drops_caches_and_unloads_models_through_the_executor(server):
    from engine.server import STATE

    unloaded = []
    server.app[STATE].executor.unload_hooks.append(lambda: unloaded.append(True))
    assert post(server, "/free", {"unload_models": True, "free_memory": True}).status == 200
    wait_for(lambda: unloaded)
    assert post(server, "/free", data=b"{oops", headers={"Content-Type": "application/json"}).json() == {
        "error": "Request body is not valid JSON"}


def test_a_prompt_stopped_by_a_graceful_shutdown_stays_queued_for_the_next_start(start_server, base_dir):
    from engine.queue import SqliteStore

    server = start_server()
    running = _block(server, seconds=1.0)
    waiting = queue_prompt(server, chain(4))
    server.stop()
    store = SqliteStore(str(base_dir / "user" / "kiln_queue.sqlite3"))
    assert [i.prompt_id for i in store.list()[1]] == [running, waiting] and store.history() == {}
    store.close()
    restarted = start_server()
    assert wait_history(restarted, waiting)["status"]["status_str"] == "success"
    assert wait_history(restarted, running)["status"]["status_str"] == "success"
