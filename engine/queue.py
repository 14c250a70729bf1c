"""Durable prompt queue and history: a small interface and its SQLite (WAL) implementation."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from dataclasses import dataclass, field
from typing import Protocol

from engine import jobs

Number = int | float


@dataclass
class QueueItem:
    """One queued prompt; `wire()` is the 5-element array clients see (api.md §3.1)."""

    number: Number
    prompt_id: str
    prompt: dict
    extra_data: dict
    outputs: list[str]
    sensitive: dict = field(default_factory=dict)   # never persisted (security.md S8)

    def wire(self) -> list:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


class PromptStore(Protocol):
    """What the server and the worker need from a queue backend (SQLite now, distributed later)."""

    def enqueue(self, item: QueueItem) -> None: ...
    def claim(self, timeout: float) -> QueueItem | None: ...
    def complete(self, prompt_id: str, entry: dict) -> None: ...
    def list(self) -> tuple[list[QueueItem], list[QueueItem]]: ...
    def history(self, max_items: int | None = None, offset: int | None = None) -> dict[str, dict]: ...
    def history_entry(self, prompt_id: str) -> dict | None: ...
    def history_jobs(self, statuses: set[str], workflow_id: str | None, sort_by: str, descending: bool,
                     limit: int | None) -> tuple[int, list[dict]]: ...
    def delete_pending(self, prompt_ids: list[str] | None) -> int: ...
    def delete_history(self, prompt_ids: list[str] | None) -> None: ...
    def is_queued(self, prompt_id: str) -> bool: ...
    def remaining(self) -> int: ...
    def next_number(self) -> int: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    prompt_id TEXT NOT NULL UNIQUE,
    number REAL NOT NULL,
    item TEXT NOT NULL,
    running INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS queue_order ON queue (running, number, seq);
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    prompt_id TEXT NOT NULL UNIQUE,
    number REAL NOT NULL,
    status TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    duration INTEGER NOT NULL,
    workflow_id TEXT,
    job TEXT NOT NULL,
    entry TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_seq ON history (seq, prompt_id);
"""
# The small job-summary columns come before the large `entry` so /jobs never reads entries.


def _job_columns(prompt_id: str, entry: dict) -> tuple:
    """(status, create_time, duration, workflow_id, job JSON) summarising a history entry for /jobs."""
    job = jobs.history_job(prompt_id, entry)
    return (job["status"], job.get("create_time") or 0, jobs.sort_key(job, "execution_duration"),
            job.get("workflow_id"), json.dumps(job))


def _item_from_json(text: str) -> QueueItem:
    number, prompt_id, prompt, extra_data, outputs = json.loads(text)
    return QueueItem(number, prompt_id, prompt, extra_data, outputs)


class SqliteStore:
    """Queue + history in one SQLite file (WAL): every enqueue is committed before it returns.

    synchronous=NORMAL in WAL mode survives a killed process (the crash case this guards);
    only an OS crash or power loss can lose the last commits.
    On open, a prompt left `running` by a dead process goes back to pending and runs again.
    """

    def __init__(self, path: str, max_history: int = 10000):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.max_history = max_history
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        columns = [row[1] for row in self._db.execute("PRAGMA table_info(history)")]
        if columns and "job" not in columns:
            self._add_job_columns()
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.recovered = self._db.execute("UPDATE queue SET running = 0 WHERE running = 1").rowcount
        self._history_count = self._db.execute("SELECT COUNT(*) FROM history").fetchone()[0]

    def _add_job_columns(self) -> None:
        """Rebuild a history table written before the job-summary columns existed."""
        self._db.execute("ALTER TABLE history RENAME TO history_old")
        self._db.executescript(_SCHEMA)
        rows = self._db.execute("SELECT prompt_id, number, entry FROM history_old ORDER BY seq").fetchall()
        self._db.executemany(
            "INSERT INTO history (prompt_id, number, status, create_time, duration, workflow_id, job, entry) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(pid, number, *_job_columns(pid, json.loads(entry)), entry) for pid, number, entry in rows])
        self._db.execute("DROP TABLE history_old")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def enqueue(self, item: QueueItem) -> None:
        with self._lock:
            self._db.execute("INSERT INTO queue (prompt_id, number, item) VALUES (?, ?, ?)",
                             (item.prompt_id, item.number, json.dumps(item.wire())))
            self._changed.notify_all()

    def claim(self, timeout: float) -> QueueItem | None:
        """Mark the lowest-numbered pending prompt (FIFO among equals) running and return it."""
        with self._changed:
            row = self._next_pending()
            if row is None:
                self._changed.wait(timeout)
                row = self._next_pending()
            if row is None:
                return None
            self._db.execute("UPDATE queue SET running = 1 WHERE seq = ?", (row[0],))
            return _item_from_json(row[1])

    def _next_pending(self):
        return self._db.execute(
            "SELECT seq, item FROM queue WHERE running = 0 ORDER BY number, seq LIMIT 1").fetchone()

    def complete(self, prompt_id: str, entry: dict) -> None:
        """Atomically move a finished prompt (any outcome) from the queue to history."""
        number = entry["prompt"][0]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM queue WHERE prompt_id = ?", (prompt_id,))
                summary = _job_columns(prompt_id, entry)
                updated = self._db.execute(
                    "UPDATE history SET number = ?, status = ?, create_time = ?, duration = ?, workflow_id = ?, "
                    "job = ?, entry = ? WHERE prompt_id = ?",
                    (number, *summary, json.dumps(entry), prompt_id)).rowcount
                count = self._history_count
                if not updated:
                    self._db.execute(
                        "INSERT INTO history (prompt_id, number, status, create_time, duration, workflow_id, job, "
                        "entry) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (prompt_id, number, *summary, json.dumps(entry)))
                    count += 1
                if count > self.max_history:
                    count -= self._db.execute(
                        "DELETE FROM history WHERE seq IN (SELECT seq FROM history ORDER BY seq LIMIT ?)",
                        (count - self.max_history,)).rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._history_count = count

    def list(self) -> tuple[list[QueueItem], list[QueueItem]]:
        """(running, pending), pending in execution order."""
        with self._lock:
            rows = self._db.execute("SELECT running, item FROM queue ORDER BY number, seq").fetchall()
        running = [_item_from_json(item) for flag, item in rows if flag]
        pending = [_item_from_json(item) for flag, item in rows if not flag]
        return running, pending

    def history(self, max_items: int | None = None, offset: int | None = None) -> dict[str, dict]:
        """Oldest first, with api.md §4.1's max_items/offset rules."""
        with self._lock:
            (total,) = self._db.execute("SELECT COUNT(*) FROM history").fetchone()
            start = offset if offset is not None and offset >= 0 else None
            if start is None:
                start = max(total - max_items, 0) if max_items is not None else 0
            limit = max_items if max_items is not None else -1
            # Page through the small (seq, prompt_id) index first; only the chosen rows' entries are read.
            rows = self._db.execute(
                "SELECT h.prompt_id, h.entry FROM (SELECT seq FROM history INDEXED BY history_seq ORDER BY seq "
                "LIMIT ? OFFSET ?) AS page JOIN history AS h ON h.seq = page.seq ORDER BY h.seq",
                (limit, start)).fetchall()
        return {prompt_id: json.loads(entry) for prompt_id, entry in rows}

    def history_jobs(self, statuses: set[str], workflow_id: str | None, sort_by: str, descending: bool,
                     limit: int | None) -> tuple[int, list[dict]]:
        """(count, job summaries) of history jobs with these statuses, sorted, ties oldest first."""
        if not statuses:
            return 0, []
        where = f"status IN ({', '.join('?' * len(statuses))})"
        params: list = sorted(statuses)
        if workflow_id is not None:
            where += " AND workflow_id = ?"
            params.append(workflow_id)
        key = "create_time" if sort_by == "created_at" else "duration"
        order = f"{key} {'DESC' if descending else 'ASC'}, seq"
        with self._lock:
            (total,) = self._db.execute(f"SELECT COUNT(*) FROM history WHERE {where}", params).fetchone()
            rows = self._db.execute(f"SELECT job FROM history WHERE {where} ORDER BY {order} LIMIT ?",
                                    [*params, -1 if limit is None else limit]).fetchall()
        return total, [json.loads(job) for (job,) in rows]

    def history_entry(self, prompt_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT entry FROM history WHERE prompt_id = ?", (prompt_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def delete_pending(self, prompt_ids: list[str] | None) -> int:
        """Remove the given pending prompts (all of them for None); the running one stays."""
        with self._lock:
            if prompt_ids is None:
                return self._db.execute("DELETE FROM queue WHERE running = 0").rowcount
            return self._db.executemany("DELETE FROM queue WHERE running = 0 AND prompt_id = ?",
                                        [(p,) for p in prompt_ids]).rowcount

    def delete_history(self, prompt_ids: list[str] | None) -> None:
        with self._lock:
            if prompt_ids is None:
                self._db.execute("DELETE FROM history")
            else:
                self._db.executemany("DELETE FROM history WHERE prompt_id = ?", [(p,) for p in prompt_ids])
            self._history_count = self._db.execute("SELECT COUNT(*) FROM history").fetchone()[0]

    def is_queued(self, prompt_id: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM queue WHERE prompt_id = ?", (prompt_id,)).fetchone() is not None

    def remaining(self) -> int:
        """Pending + running, the `queue_remaining` of status messages."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM queue").fetchone()[0]

    def next_number(self) -> int:
        """1 + the largest integral priority stored, so numbering continues across restarts."""
        with self._lock:
            row = self._db.execute(
                "SELECT MAX(ABS(number)) FROM (SELECT number FROM queue UNION ALL SELECT number FROM history) "
                "WHERE number = CAST(number AS INTEGER)").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1
