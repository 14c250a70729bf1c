"""The four defects found by probing the server as an attacker would, each pinned by a test."""

import os

import pytest

from apitest_client import chain, get, http, post, queue_prompt, wait_for, wait_history
from engine.queue import SqliteStore


def test_extensions_never_serve_a_file_outside_the_web_roots(server):
    for path in ("/extensions/..%2f..%2f..%2f..%2f..%2f..%2f..%2fetc/passwd",
                 "/extensions/..%2f..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd/x",
                 "/extensions/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                 "/extensions/..%5c..%5c..%5c..%5c..%5c..%5cetc/passwd"):
        reply = get(server, path)
        assert reply.status in (400, 403, 404), path
        assert b"root:" not in reply.body


def test_a_prompt_with_a_non_object_extra_pnginfo_ends_in_history_and_frees_the_queue(server):
    prompt_id = queue_prompt(server, chain(5), extra_data={"extra_pnginfo": "x"})
    entry = wait_history(server, prompt_id)
    assert entry["status"]["completed"] is True
    wait_for(lambda: get(server, "/queue").json() == {"queue_running": [], "queue_pending": []})
    assert get(server, "/api/jobs").status == 200
    later = queue_prompt(server, chain(6))
    assert wait_history(server, later)["outputs"]


class StoreThatCannotRecordExtraData(SqliteStore):
    """Recording history fails for prompts carrying extra data, as a bookkeeping bug would."""

    def complete(self, prompt_id, entry):
        if entry["prompt"][3]:
            raise TypeError("cannot shape this entry")
        super().complete(prompt_id, entry)


def test_a_failure_while_recording_a_prompt_still_ends_it_as_an_execution_error(start_server, base_dir):
    store = StoreThatCannotRecordExtraData(str(base_dir / "user" / "queue.sqlite3"))
    server = start_server(store=store)
    prompt_id = queue_prompt(server, chain(5))   # extra_data always holds create_time
    entry = wait_history(server, prompt_id)
    assert entry["status"]["status_str"] == "error"
    kind, error = entry["status"]["messages"][-1]
    assert kind == "execution_error" and error["exception_type"] == "TypeError"
    assert get(server, "/queue").json() == {"queue_running": [], "queue_pending": []}
    server.stop()
    reopened = SqliteStore(str(base_dir / "user" / "queue.sqlite3"))
    assert reopened.recovered == 0 and reopened.remaining() == 0   # a restart runs nothing again
    reopened.close()


MALFORMED_UPLOADS = {
    "garbage body": (b"\x00\xff garbage", "multipart/form-data; boundary=xx"),
    "empty body": (b"", "multipart/form-data; boundary=xx"),
    "missing boundary": (b"--xx\r\n\r\n", "multipart/form-data"),
    "NUL in filename": (b'--xx\r\nContent-Disposition: form-data; name="image"; filename="a\x00b.png"\r\n\r\n'
                        b"abc\r\n--xx--\r\n", "multipart/form-data; boundary=xx"),
    "truncated part": (b'--xx\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\nabc',
                       "multipart/form-data; boundary=xx"),
}


@pytest.mark.parametrize("route", ["/upload/image", "/upload/mask"])
@pytest.mark.parametrize("case", sorted(MALFORMED_UPLOADS))
def test_a_malformed_multipart_upload_answers_400_with_a_message(server, base_dir, route, case):
    body, content_type = MALFORMED_UPLOADS[case]
    reply = http(server, "POST", route, data=body, headers={"Content-Type": content_type})
    assert reply.status == 400, reply.body
    assert reply.body   # a message, not an empty 400
    assert not [n for n in os.listdir(base_dir / "temp") if n.startswith(".upload-")]   # no temp file left


@pytest.mark.parametrize("query", ["/history?max_items=99999999999999999999", "/history?offset=99999999999999999999",
                                   "/history?offset=-99999999999999999999", "/api/jobs?limit=99999999999999999999",
                                   "/api/jobs?offset=99999999999999999999", "/api/history?max_items=1" + "0" * 5000])
def test_huge_integers_in_query_parameters_never_answer_5xx(server, query):
    reply = get(server, query)
    assert reply.status in (200, 400), reply.body


def test_a_huge_max_items_means_the_whole_history(server):
    ids = [queue_prompt(server, chain(i)) for i in range(3)]
    for prompt_id in ids:
        wait_history(server, prompt_id)
    assert sorted(get(server, "/history?max_items=99999999999999999999").json()) == sorted(ids)
    assert get(server, "/api/jobs?limit=99999999999999999999").json()["pagination"]["total"] == 3
