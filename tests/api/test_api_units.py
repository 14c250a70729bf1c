"""Pure pieces of the server: header gates, event routing table, bounded send buffers, durable store."""

import asyncio

from engine.queue import QueueItem, SqliteStore
from engine.security import SecurityPolicy, check_request, split_host
from engine.server import SEND_QUEUE_LIMIT, Client, route_event


def test_host_headers_split_into_lowercase_name_and_port():
    assert split_host("LocalHost:8188") == ("localhost", 8188)
    assert split_host("[::1]:8188") == ("::1", 8188)
    assert split_host("example.com") == ("example.com", None)


def test_origin_without_port_matches_a_host_without_port_behind_a_proxy():
    headers = {"Host": "kiln.example", "Origin": "https://kiln.example"}
    assert check_request("GET", "/api/queue", headers, {}, SecurityPolicy(allowed_hosts=("kiln.example",))) is None


def test_wildcard_allowed_hosts_match_subdomains_only():
    policy = SecurityPolicy(allowed_hosts=("*.example.com",))
    assert check_request("GET", "/", {"Host": "a.example.com"}, {}, policy) is None
    assert check_request("GET", "/", {"Host": "example.com"}, {}, policy).status == 403
    assert check_request("GET", "/", {"Host": "badexample.com"}, {}, policy).status == 403


def test_a_request_without_host_is_a_400():
    assert check_request("GET", "/", {}, {}, SecurityPolicy()).status == 400


def test_events_of_prompts_without_a_client_follow_the_routing_table():
    assert route_event("executing", {}, "c") == (True, "c")
    assert route_event("executing", {}, None) == (False, None)
    assert route_event("progress", {}, None) == (True, None)
    assert route_event("execution_interrupted", {}, None) == (True, None)
    assert route_event("execution_error", {"exception_type": "ValueError"}, None) == (False, None)
    assert route_event("execution_error", {"exception_type": "ExecutionBlocked"}, None) == (True, None)


def test_a_full_send_buffer_drops_previews_before_messages():
    async def scenario():
        client = Client(ws=None, sid="s")
        client.push(b"preview", is_preview=True)
        for i in range(SEND_QUEUE_LIMIT + 10):
            client.push(f"m{i}")
        return client

    client = asyncio.run(scenario())
    assert len(client.frames) == SEND_QUEUE_LIMIT
    assert not any(is_preview for is_preview, _ in client.frames)
    assert client.frames[-1][1] == f"m{SEND_QUEUE_LIMIT + 9}"


def test_history_keeps_only_the_newest_entries_past_the_cap(tmp_path):
    store = SqliteStore(str(tmp_path / "q.sqlite3"), max_history=3)
    for i in range(5):
        item = QueueItem(i, f"p{i}", {}, {}, [])
        store.enqueue(item)
        store.complete(store.claim(0).prompt_id, {"prompt": item.wire(), "outputs": {}, "status": None})
    assert list(store.history()) == ["p2", "p3", "p4"]
    store.close()
    reopened = SqliteStore(str(tmp_path / "q.sqlite3"), max_history=3)
    assert list(reopened.history()) == ["p2", "p3", "p4"] and reopened.next_number() == 5


def test_a_prompt_running_when_the_store_was_abandoned_is_pending_again_on_reopen(tmp_path):
    store = SqliteStore(str(tmp_path / "q.sqlite3"))
    for i in range(3):
        store.enqueue(QueueItem(i, f"p{i}", {}, {}, []))
    assert store.claim(0).prompt_id == "p0"
    reopened = SqliteStore(str(tmp_path / "q.sqlite3"))
    assert reopened.recovered == 1
    assert [i.prompt_id for i in reopened.list()[1]] == ["p0", "p1", "p2"]


def test_unsafe_start_configurations_are_refused_with_the_flag_to_use():
    from engine.security import startup_problem

    assert "--token" in startup_problem(("0.0.0.0", "::"), SecurityPolicy(), False)
    assert startup_problem(("0.0.0.0",), SecurityPolicy(token="t"), False) is None
    assert startup_problem(("0.0.0.0",), SecurityPolicy(), True) is None
    assert startup_problem(("localhost", "127.0.0.1", "::1"), SecurityPolicy(), False) is None
    assert "token" in startup_problem(("127.0.0.1",), SecurityPolicy(cors_origins=("*",)), False)


def test_any_origin_cors_answers_a_star_without_credentials():
    from engine.security import cors_headers

    headers = cors_headers("http://anything.example", SecurityPolicy(token="t", cors_origins=("*",)))
    assert headers["Access-Control-Allow-Origin"] == "*" and "Access-Control-Allow-Credentials" not in headers
    assert cors_headers("null", SecurityPolicy(token="t", cors_origins=("*",))) == {}


def test_the_token_can_come_from_the_environment_or_be_generated_into_the_user_dir(tmp_path, monkeypatch):
    import os
    import stat

    from engine.config import RuntimeConfig
    from engine.paths import Paths
    from engine.server import security_policy

    paths = Paths(str(tmp_path))
    monkeypatch.setenv("KILN_TOKEN", "from-env")
    assert security_policy(RuntimeConfig(), paths).token == "from-env"
    monkeypatch.delenv("KILN_TOKEN")
    generated = security_policy(RuntimeConfig(generate_token=True), paths).token
    stored = tmp_path / "user" / "kiln_token"
    assert len(generated) >= 43 and stored.read_text() == generated
    assert stat.S_IMODE(os.stat(stored).st_mode) == 0o600
    (tmp_path / "t.txt").write_text("from-file\n")
    assert security_policy(RuntimeConfig(token_file=str(tmp_path / "t.txt")), paths).token == "from-file"


def test_a_history_table_from_before_the_job_columns_is_upgraded_in_place(tmp_path):
    import json
    import sqlite3

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE history (seq INTEGER PRIMARY KEY AUTOINCREMENT, prompt_id TEXT NOT NULL UNIQUE, "
                     "number REAL NOT NULL, entry TEXT NOT NULL)")
    entry = {"prompt": [3, "old", {}, {"create_time": 5}, []], "outputs": {},
             "status": {"status_str": "error", "completed": False,
                        "messages": [["execution_interrupted", {"prompt_id": "old", "timestamp": 9}]]}}
    db.execute("INSERT INTO history (prompt_id, number, entry) VALUES ('old', 3, ?)", (json.dumps(entry),))
    db.commit()
    db.close()
    store = SqliteStore(str(path))
    assert store.history_entry("old") == entry
    assert store.history_jobs({"cancelled"}, None, "created_at", True, None) == (1, [
        {"id": "old", "status": "cancelled", "priority": 3, "create_time": 5, "execution_end_time": 9,
         "outputs_count": 0}])
