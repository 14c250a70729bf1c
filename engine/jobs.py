"""The jobs view (api.md §5): one job model derived from queue items and history entries."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.security import query_int

if TYPE_CHECKING:  # engine.queue imports this module to summarise history entries
    from engine.queue import QueueItem

# history_page(statuses, workflow_id, sort_by, descending, limit) -> (total, jobs in order, ties by age)
HistoryPage = Callable[[set[str], "str | None", str, bool, "int | None"], tuple[int, list[dict]]]

STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")
PREVIEW_KEYS = ("images", "video", "audio")
MODEL_3D = (".obj", ".fbx", ".gltf", ".glb")


class JobQueryError(ValueError):
    """A bad /jobs query parameter; the message is the 400 body's `error`."""


def history_status(entry: dict) -> str:
    """completed / failed / cancelled from a history entry's status object (§5.1)."""
    status = entry.get("status") or {}
    if status.get("status_str", "success") == "success":
        return "completed"
    messages = status.get("messages") or []
    if messages and messages[-1][0] == "execution_interrupted":
        return "cancelled"
    return "failed"


def _workflow_id(extra_data: dict) -> str | None:
    """The editor workflow's id; clients may send any JSON as extra_pnginfo, so every level is checked."""
    pnginfo = extra_data.get("extra_pnginfo")
    workflow = pnginfo.get("workflow") if isinstance(pnginfo, dict) else None
    workflow_id = workflow.get("id") if isinstance(workflow, dict) else None
    return workflow_id if isinstance(workflow_id, str) else None


def _output_items(outputs: dict):
    for node_id, ui in outputs.items():
        if not isinstance(ui, dict):
            continue
        for key, value in ui.items():
            if key == "animated" or not isinstance(value, list):
                continue
            for item in value:
                if isinstance(item, dict):
                    yield node_id, key, item


def _previewable(key: str, item: dict) -> bool:
    if key in PREVIEW_KEYS:
        return True
    fmt = item.get("format")
    if isinstance(fmt, str) and fmt.startswith(("video/", "audio/")):
        return True
    name = item.get("filename")
    return isinstance(name, str) and name.lower().endswith(MODEL_3D)


def _preview_output(outputs: dict) -> dict | None:
    candidates = [(n, k, i) for n, k, i in _output_items(outputs) if _previewable(k, i)]
    chosen = next((c for c in candidates if c[2].get("type") == "output"), candidates[0] if candidates else None)
    if chosen is None:
        return None
    node_id, key, item = chosen
    return {**item, "nodeId": node_id, "mediaType": key}


def _pruned(job: dict) -> dict:
    return {k: v for k, v in job.items() if v is not None}


def queue_job(item: QueueItem, status: str) -> dict:
    """A pending / in_progress job (list and single form are the same)."""
    return _pruned({"id": item.prompt_id, "status": status, "priority": item.number,
                    "create_time": item.extra_data.get("create_time"), "outputs_count": 0,
                    "workflow_id": _workflow_id(item.extra_data)})


def history_job(prompt_id: str, entry: dict, single: bool = False) -> dict:
    """A finished job from its history entry; `single` adds outputs, status and workflow."""
    number, _, prompt, extra_data, _ = entry["prompt"]
    messages = (entry.get("status") or {}).get("messages") or []
    start = next((d.get("timestamp") for e, d in messages if e == "execution_start"), None)
    end = next((d.get("timestamp") for e, d in reversed(messages)
                if e in ("execution_success", "execution_error", "execution_interrupted")), None)
    error = next((d for e, d in messages if e == "execution_error"), None)
    outputs = entry.get("outputs") or {}
    status = history_status(entry)
    job = {"id": prompt_id, "status": status, "priority": number,
           "create_time": extra_data.get("create_time"), "execution_start_time": start,
           "execution_end_time": end, "execution_error": error if status == "failed" else None,
           "outputs_count": sum(1 for _ in _output_items(outputs)),
           "preview_output": _preview_output(outputs), "workflow_id": _workflow_id(extra_data)}
    if single:
        job |= {"outputs": outputs, "execution_status": entry.get("status"),
                "workflow": {"prompt": prompt, "extra_data": extra_data}}
    return _pruned(job)


def _parse_int(value: str | None, name: str) -> int | None:
    try:
        return query_int(value)
    except ValueError:
        raise JobQueryError(f"{name} must be an integer") from None


def sort_key(job: dict, sort_by: str) -> int:
    """created_at: create_time; execution_duration: end - start (0 when either is missing)."""
    if sort_by == "created_at":
        return job.get("create_time") or 0
    start, end = job.get("execution_start_time"), job.get("execution_end_time")
    return end - start if start is not None and end is not None else 0


def list_jobs(query: dict[str, str], running: list[QueueItem], pending: list[QueueItem],
              history_page: HistoryPage) -> dict:
    """GET /jobs: filter, sort and paginate (api.md §5.2); raises JobQueryError for bad params.

    Queue jobs are few and built here; history jobs come pre-filtered and pre-sorted from the store,
    only as many as the requested page needs.
    """
    wanted = set(STATUSES)
    if "status" in query:
        values = [v.strip().lower() for v in query["status"].split(",") if v.strip()]
        invalid = [v for v in values if v not in STATUSES]
        if invalid:
            raise JobQueryError(f"Invalid status value(s): {', '.join(invalid)}. "
                                f"Valid values: {', '.join(STATUSES)}")
        if values:
            wanted = set(values)
    sort_by = query.get("sort_by", "created_at").lower()
    if sort_by not in ("created_at", "execution_duration"):
        raise JobQueryError("sort_by must be 'created_at' or 'execution_duration'")
    sort_order = query.get("sort_order", "desc").lower()
    if sort_order not in ("asc", "desc"):
        raise JobQueryError("sort_order must be 'asc' or 'desc'")
    limit = _parse_int(query.get("limit"), "limit")
    if limit is not None and limit <= 0:
        raise JobQueryError("limit must be a positive integer")
    offset = max(_parse_int(query.get("offset"), "offset") or 0, 0)
    workflow_id = query.get("workflow_id")

    jobs = []
    if "in_progress" in wanted:
        jobs += [queue_job(i, "in_progress") for i in running]
    if "pending" in wanted:
        jobs += [queue_job(i, "pending") for i in pending]
    if workflow_id is not None:
        jobs = [j for j in jobs if j.get("workflow_id") == workflow_id]
    history_total, history_jobs = history_page(
        wanted & {"completed", "failed", "cancelled"}, workflow_id, sort_by, sort_order == "desc",
        None if limit is None else offset + limit)
    total = len(jobs) + history_total
    jobs += history_jobs
    jobs.sort(key=lambda job: sort_key(job, sort_by), reverse=sort_order == "desc")   # stable: queue first
    page = jobs[offset:] if limit is None else jobs[offset:offset + limit]
    return {"jobs": page, "pagination": {"offset": offset, "limit": limit, "total": total,
                                         "has_more": offset + len(page) < total}}
