"""The ComfyUI-compatible HTTP + WebSocket server (api.md): an aiohttp app factory.

The event loop only routes and stores; prompts run on one worker thread that calls the
executor, and its events hop back to the loop with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import hashlib
import io
import json
import logging
import mimetypes
import os
import secrets
import struct
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from urllib.parse import quote

from aiohttp import WSMsgType, web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict

from engine import security
from engine.config import RuntimeConfig
from engine.errors import PathEscape
from engine.jobs import JobQueryError, history_job, list_jobs, queue_job
from engine.paths import Paths
from engine.queue import PromptStore, QueueItem, SqliteStore
from engine.validate import validate_prompt

log = logging.getLogger("kiln.server")

SENSITIVE_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
MAX_JSON_DEPTH = 256
MAX_PROMPT_NODES = 50_000
MAX_WS_MESSAGE = 1 << 20
MAX_UPLOAD_PARTS = 16
MAX_FIELD_BYTES = 64 * 1024
MAX_IMAGE_SIDE = 16384
MAX_IMAGE_PIXELS = 16384 * 16384
SEND_QUEUE_LIMIT = 512              # frames buffered per WebSocket client
PREVIEW_INTERVAL = 0.1              # at most 10 previews per second are encoded and sent
COMFYUI_API_LEVEL = "0.8.0"
OLDEST_FRONTEND = "1.35.9"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_WEB_ROOT = os.path.join(REPO_ROOT, "web")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".avif", ".ico", ".svg")


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class SystemHooks:
    """Device facts the engine cannot know without torch (diffusion owns the models); main.py passes them.

    Unloading models on POST /free goes through `Executor.unload_hooks`, not through here.
    """

    devices: Callable[[], list[dict]] | None = None           # /system_stats "devices" entries
    pytorch_version: str = ""


class BadRequest(Exception):
    """A client error with its 400 JSON body."""

    def __init__(self, body: dict, status: int = 400):
        super().__init__(str(body))
        self.body = body
        self.status = status


# -- WebSocket clients ---------------------------------------------------------------------------

class Client:
    """One connected socket: a bounded send buffer drained by its own task."""

    def __init__(self, ws: web.WebSocketResponse, sid: str):
        self.ws = ws
        self.sid = sid
        self.flags: dict = {}
        self.frames: collections.deque[tuple[bool, str | bytes]] = collections.deque()
        self.wakeup = asyncio.Event()

    def push(self, frame: str | bytes, is_preview: bool = False) -> None:
        """Queue a frame; when full, drop previews first, then the oldest frame (never block)."""
        if is_preview:
            if len(self.frames) >= SEND_QUEUE_LIMIT // 2:    # a backed-up client gets no previews
                return
        elif len(self.frames) >= SEND_QUEUE_LIMIT:
            previews = [f for f in self.frames if f[0]]
            if previews:
                self.frames.remove(previews[0])
            else:
                self.frames.popleft()
        self.frames.append((is_preview, frame))
        self.wakeup.set()

    async def pump(self) -> None:
        """Send queued frames until the socket closes."""
        while not self.ws.closed:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.frames and not self.ws.closed:
                _, frame = self.frames.popleft()
                try:
                    if isinstance(frame, bytes):
                        await self.ws.send_bytes(frame)
                    else:
                        await self.ws.send_str(frame)
                except (ConnectionError, RuntimeError):
                    return


class Hub:
    """Routes messages to sockets by sid (api.md §11.4); runs on the event loop only."""

    def __init__(self):
        self.clients: dict[str, Client] = {}

    def send_json(self, event: str, data: dict, sid: str | None) -> None:
        """Send to one sid, or broadcast when sid is None."""
        targets = list(self.clients.values()) if sid is None else [c for c in [self.clients.get(sid)] if c]
        if targets:
            text = json.dumps({"type": event, "data": data})
            for client in targets:
                client.push(text)

    def send_binary(self, frame: bytes, sid: str | None) -> None:
        targets = self.clients.values() if sid is None else filter(None, [self.clients.get(sid)])
        for client in list(targets):
            client.push(frame)

    def send_preview(self, image_format: str, data: bytes, meta: dict, sid: str | None) -> None:
        """Event 1 to clients without `supports_preview_metadata`, event 4 to C with it."""
        fmt = 2 if image_format == "PNG" else 1
        plain = struct.pack(">II", 1, fmt) + data
        if sid is None:
            for client in list(self.clients.values()):
                client.push(plain, is_preview=True)
            return
        client = self.clients.get(sid)
        if client is None:
            return
        if client.flags.get("supports_preview_metadata"):
            meta_bytes = json.dumps({**meta, "image_type": "image/png" if fmt == 2 else "image/jpeg"}).encode()
            client.push(struct.pack(">II", 4, len(meta_bytes)) + meta_bytes + data, is_preview=True)
        else:
            client.push(plain, is_preview=True)


# -- routing of executor events ------------------------------------------------------------------

BROADCAST_WITHOUT_CLIENT = frozenset({"execution_interrupted", "progress", "progress_state"})


def route_event(event: str, data: dict, client_id: str | None) -> tuple[bool, str | None]:
    """(send?, sid or None for broadcast) for an executor event, per api.md §11.4."""
    if client_id:
        return True, client_id
    if event in BROADCAST_WITHOUT_CLIENT:
        return True, None
    if event == "execution_error" and data.get("exception_type") == "ExecutionBlocked":
        return True, None
    return False, None


def encode_preview(image, image_format: str, max_size: int | None, default_size: int) -> bytes:
    """Downscale (bilinear, aspect kept) and encode a PIL preview: JPEG q95 or PNG."""
    from PIL import Image

    limit = max_size or default_size
    if image.width > limit or image.height > limit:
        image = image.copy()
        image.thumbnail((limit, limit), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    if image_format == "PNG":
        image.save(buf, format="PNG")
    else:
        image.convert("RGB").save(buf, format="JPEG", quality=95)
    return buf.getvalue()


# -- the worker thread ---------------------------------------------------------------------------

class Worker:
    """Runs queued prompts one at a time on its own thread."""

    def __init__(self, state: "ServerState"):
        self.state = state
        self.stop = threading.Event()
        self.interrupt = threading.Event()
        self.lock = threading.Lock()
        self.running: QueueItem | None = None
        self.current_node: str | None = None
        self.pending_free: tuple[bool, bool] | None = None
        self.last_preview = 0.0
        self.thread = threading.Thread(target=self._loop, name="kiln-worker", daemon=True)

    def post(self, fn: Callable, *args) -> None:
        """Run fn(*args) on the event loop (the only way worker code touches sockets)."""
        loop = self.state.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(fn, *args)

    def post_pack_message(self, event: str, data, sid: str | None) -> None:
        """PromptServer.instance.send_sync from any thread; `progress_text` becomes binary event 3."""
        if event == "progress_text":     # to the running prompt's client unless a sid is given
            node = str(data.get("node_id", "")).encode()
            frame = struct.pack(">II", 3, len(node)) + node + str(data.get("text", "")).encode()
            self.post(self.state.hub.send_binary, frame, sid or self.state.registry.bridge.client_id)
        else:
            self.post(self.state.hub.send_json, event, data, sid)

    def request_free(self, unload_models: bool, free_memory: bool) -> None:
        with self.lock:
            old = self.pending_free or (False, False)
            self.pending_free = (old[0] or unload_models, old[1] or free_memory)

    def interrupt_prompt(self, prompt_id: str | None) -> bool:
        """Interrupt the running prompt (only if it is `prompt_id` when given)."""
        with self.lock:
            running = self.running
        if running is None or (prompt_id is not None and running.prompt_id != prompt_id):
            if prompt_id is None:
                self.interrupt.set()    # cleared when the next prompt starts
            return False
        self.interrupt.set()
        return True

    def _apply_free(self) -> None:
        with self.lock:
            flags, self.pending_free = self.pending_free, None
        if flags is None:
            return
        unload, free_memory = flags
        self.state.executor.free(unload_models=unload or free_memory, free_memory=free_memory)

    def _loop(self) -> None:
        store = self.state.store
        while not self.stop.is_set():
            self._apply_free()
            item = store.claim(timeout=0.2)
            if item is None:
                continue
            if self.stop.is_set():
                break
            try:
                self._run(item)
            except Exception as exc:   # a bug in bookkeeping must neither stop the queue nor leave the prompt running
                log.exception("worker failed on prompt %s", item.prompt_id)
                self._end_failed(item, exc)

    def _end_failed(self, item: QueueItem, exc: Exception) -> None:
        """End a prompt whose bookkeeping raised: an execution_error in history, nothing left running."""
        error = _crash_error(item.prompt_id, exc)
        store = self.state.store
        try:
            store.complete(item.prompt_id, _error_entry(item.wire(), error))
        except Exception:   # the prompt's own data broke the history write: record it without that data
            log.exception("recording prompt %s with its data failed; recording it without", item.prompt_id)
            store.complete(item.prompt_id, _error_entry([item.number, item.prompt_id, {}, {}, []], error))
        with self.lock:
            self.running = None
            self.current_node = None
        self._post_status()
        client_id = item.extra_data.get("client_id") if isinstance(item.extra_data, dict) else None
        if isinstance(client_id, str):
            self.post(self.state.hub.send_json, "execution_error", error, client_id)
            self.post(self.state.hub.send_json, "executing", {"node": None, "prompt_id": item.prompt_id}, client_id)

    def _run(self, item: QueueItem) -> None:
        state = self.state
        client_id = item.extra_data.get("client_id")
        client_id = client_id if isinstance(client_id, str) else None   # sids are strings
        item.sensitive = state.sensitive.pop(item.prompt_id, {})
        with self.lock:
            self.running = item
            self.current_node = None
        self.interrupt.clear()
        state.registry.bridge.client_id = client_id
        state.registry.bridge.last_prompt_id = item.prompt_id
        self._post_status()

        # A client with `supports_preview_metadata` gets a step's progress_state and preview frame
        # before its `progress` message (api.md §11.6); the executor emits progress first.
        held: list[dict] = []
        state_passed = [False]

        def send(event: str, data: dict) -> None:
            ok, sid = route_event(event, data, client_id)
            if ok:
                self.post(state.hub.send_json, event, data, sid)

        def release() -> None:
            while held:
                send("progress", held.pop(0))

        def emit(event: str, data: dict) -> None:
            if event == "preview":
                self._emit_preview(data, client_id)
                release()
                return
            if event == "progress_state" and held and not state_passed[0]:
                state_passed[0] = True
                send(event, data)
                return
            release()
            if event == "progress" and self._wants_metadata(client_id):
                held.append(data)
                state_passed[0] = False
                return
            if event == "executing":
                self.current_node = data.get("display_node", data.get("node"))
                state.registry.bridge.last_node_id = self.current_node
            send(event, data)

        try:
            result = state.executor.run(item.prompt_id, item.prompt,
                                        extra_data={**item.extra_data, **item.sensitive},
                                        outputs=item.outputs, emit=emit, interrupt=self.interrupt)
            if result.status == "interrupted" and self.stop.is_set():
                # Shutdown, not the user, stopped it: it stays queued and runs again at the next start.
                log.info("prompt %s was stopped by the shutdown; it will run again", item.prompt_id)
                return
            status_str = "success" if result.status == "success" else "error"
            entry = {"prompt": item.wire(), "outputs": result.outputs,
                     "status": {"status_str": status_str, "completed": status_str == "success",
                                "messages": result.messages},
                     "meta": result.meta}
        except Exception as exc:   # the executor reports node errors itself; this is a crash in it
            log.exception("executor crashed on prompt %s", item.prompt_id)
            error = _crash_error(item.prompt_id, exc)
            emit("execution_error", error)
            entry = _error_entry(item.wire(), error)
        release()
        state.store.complete(item.prompt_id, entry)
        with self.lock:
            self.running = None
            self.current_node = None
        self._post_status()
        if client_id:
            self.post(state.hub.send_json, "executing", {"node": None, "prompt_id": item.prompt_id}, client_id)

    def _wants_metadata(self, client_id: str | None) -> bool:
        client = self.state.hub.clients.get(client_id) if client_id else None
        return bool(client is not None and client.flags.get("supports_preview_metadata"))

    def _post_status(self) -> None:
        """Broadcast the queue size as of now (taken on this thread, so the count is not stale)."""
        if self.state.hub.clients:
            self.post(self.state.hub.send_json, "status", self.state.status_data(), None)

    def _emit_preview(self, data: dict, client_id: str | None) -> None:
        """Encode on this thread, but only as often as clients may receive previews at all."""
        state = self.state
        now = time.monotonic()
        if not state.hub.clients or now - self.last_preview < PREVIEW_INTERVAL:
            return
        self.last_preview = now
        fmt = data.get("format", "JPEG")
        encoded = encode_preview(data["image"], fmt, data.get("max_size"), state.config.preview_size)
        meta = {"node_id": data.get("node_id"), "prompt_id": data.get("prompt_id"),
                "display_node_id": data.get("display_node_id", data.get("node_id")),
                "parent_node_id": data.get("parent_node_id"), "real_node_id": data.get("real_node_id",
                                                                                        data.get("node_id"))}
        self.post(state.hub.send_preview, fmt, encoded, meta, client_id or None)


# -- log console (/internal/logs) ------------------------------------------------------------------

def _crash_error(prompt_id: str, exc: Exception) -> dict:
    """The execution_error payload for a failure outside any node (api.md §11.5 shape, node fields null)."""
    return {"prompt_id": prompt_id, "node_id": None, "node_type": None, "executed": [],
            "exception_message": f"{exc}\n", "exception_type": type(exc).__name__,
            "traceback": [], "current_inputs": {}, "current_outputs": [], "timestamp": _now_ms()}


def _error_entry(wire: list, error: dict) -> dict:
    """A history entry for a prompt that ended with `error` before producing outputs."""
    return {"prompt": wire, "outputs": {}, "meta": {},
            "status": {"status_str": "error", "completed": False, "messages": [["execution_error", error]]}}


class LogBuffer(logging.Handler):
    """Keeps recent log lines for /internal/logs and streams new ones to subscribed sockets."""

    def __init__(self, state: "ServerState", size: int = 1000):
        super().__init__(logging.INFO)
        self.state = state
        self.entries: collections.deque[dict] = collections.deque(maxlen=size)
        self.subscribers: set[str] = set()
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        entry = {"t": datetime.datetime.fromtimestamp(record.created).isoformat(), "m": self.format(record) + "\n"}
        self.entries.append(entry)
        worker = self.state.worker
        if worker is not None:
            for sid in list(self.subscribers):
                worker.post(self.state.hub.send_json, "logs", {"entries": [entry], "size": None}, sid)


# -- application state ---------------------------------------------------------------------------

@dataclass
class ServerState:
    """Everything the handlers share; one per application."""

    config: RuntimeConfig
    registry: object
    executor: object
    paths: Paths
    store: PromptStore
    policy: security.SecurityPolicy
    hooks: SystemHooks
    web_root: str
    hub: Hub = field(default_factory=Hub)
    loop: asyncio.AbstractEventLoop | None = None
    worker: Worker | None = None
    counter: int = 0
    sensitive: dict[str, dict] = field(default_factory=dict)
    max_body: int = 100 * 1024 * 1024
    workflows_dir: str = os.path.join(REPO_ROOT, "workflows")
    logs: LogBuffer | None = None

    def status_data(self) -> dict:
        return {"status": {"exec_info": {"queue_remaining": self.store.remaining()}}}

    def broadcast_status(self) -> None:
        if self.hub.clients:
            self.hub.send_json("status", self.status_data(), None)

    def features(self) -> dict:
        return {"supports_preview_metadata": True, "max_upload_size": self.max_body}


STATE = web.AppKey("kiln_state", ServerState)


def _json(data, status: int = 200, **kwargs) -> web.Response:
    return web.Response(text=json.dumps(data), status=status, content_type="application/json",
                        charset="utf-8", **kwargs)


def _empty() -> web.Response:
    return web.Response(status=200)


def _error(message: str, status: int = 400) -> web.Response:
    return _json({"error": message}, status=status)


def _too_deep(value, limit: int = MAX_JSON_DEPTH) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return False


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def parse_json(body: bytes):
    """Strict JSON (no NaN/Infinity, bounded depth); ValueError with the parser's message."""
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("JSON nesting too deep") from None
    if _too_deep(value):
        raise ValueError(f"JSON nesting deeper than {MAX_JSON_DEPTH}")
    return value


async def _read_json(request: web.Request, *, optional: bool = False):
    """The body as JSON; 400 {"error"} when malformed (empty counts as {} when optional)."""
    body = await request.read()
    if optional and not body.strip():
        return {}
    try:
        return parse_json(body)
    except ValueError:
        if optional:
            return {}
        raise BadRequest({"error": "Request body is not valid JSON"}) from None


async def _read_json_object(request: web.Request) -> dict:
    value = await _read_json(request)
    if not isinstance(value, dict):
        raise BadRequest({"error": "Request body must be a JSON object"})
    return value


def _prompt_error(kind: str, message: str, details: str) -> BadRequest:
    return BadRequest({"error": {"type": kind, "message": message, "details": details, "extra_info": {}},
                       "node_errors": {}})


# -- middlewares and response headers ------------------------------------------------------------

@web.middleware
async def security_middleware(request: web.Request, handler):
    """security.md S2-S5 before any handler; JSON 400s for BadRequest; never a bare 500."""
    state = request.app[STATE]
    policy = state.policy
    headers = request.headers
    if request.method == "GET" and request.path == "/" and "token" in request.query and policy.token:
        host_ok = security.host_allowed(security.split_host(headers.get("Host", ""))[0], policy.allowed_hosts)
        query_token = {"Authorization": f"Bearer {request.query['token']}"}
        if host_ok and security.token_presented(query_token, {}, policy.token):
            response = web.Response(status=303, headers={"Location": "/"})
            response.set_cookie("kiln_token", policy.token, httponly=True, samesite="Strict", path="/",
                                secure=request.secure or None)
            return response
    if request.path in ("/ws", "/api/ws") and "token" in request.query and "Authorization" not in headers:
        # WebSocket clients that cannot set headers may pass the token in the URL (issue 3)
        headers = CIMultiDict(headers)
        headers["Authorization"] = f"Bearer {request.query['token']}"
    rejection = security.check_request(request.method, request.path, headers, request.cookies, policy)
    if rejection is not None:
        log.warning("refused %s %s from %s: %s", request.method, request.path, request.remote, rejection.reason)
        return _json(rejection.body, status=rejection.status, headers=dict(rejection.headers))
    cors = security.cors_headers(headers.get("Origin"), policy)
    if request.method == "OPTIONS":
        return web.Response(status=204, headers=cors or {"Allow": "GET, POST, DELETE, PATCH, OPTIONS"})
    try:
        response = await handler(request)
    except BadRequest as exc:
        response = _json(exc.body, status=exc.status)
    except web.HTTPException as exc:
        exc.headers.update(cors)
        raise
    except (ConnectionError, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        response = _error("internal server error", 500)
    if cors and not response.prepared:
        response.headers.update(cors)
    return response


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """nosniff everywhere; anti-framing on HTML; no-cache on scripts and styles (S7, §10.11)."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    if response.content_type == "text/html":
        response.headers["X-Frame-Options"] = "SAMEORIGIN"
        response.headers.setdefault("Content-Security-Policy", "frame-ancestors 'self'")
    path = request.path
    if path.endswith((".js", ".css")) or (path.rsplit("/", 1)[-1].startswith("index") and path.endswith(".json")):
        response.headers.setdefault("Cache-Control", "no-cache")
    elif path.lower().endswith(IMAGE_SUFFIXES) and response.status == 200:
        response.headers.setdefault("Cache-Control", "public, max-age=86400")


# -- queue, prompt, history, jobs ----------------------------------------------------------------

async def post_prompt(request: web.Request) -> web.Response:
    """POST /prompt: parse, hooks, number, validate, persist, then answer (api.md §1)."""
    state = request.app[STATE]
    try:
        body = parse_json(await request.read())
    except ValueError as exc:
        raise _prompt_error("invalid_json", "Request body is not valid JSON", str(exc)) from None
    if not isinstance(body, dict):
        raise _prompt_error("invalid_prompt", "Prompt must be an object mapping node ids to nodes",
                            "the request body must be a JSON object")
    replaced = state.registry.bridge.trigger_on_prompt(body)
    body = replaced if isinstance(replaced, dict) else body
    number = body.get("number")
    if number is not None:
        try:
            number = float(number)
        except (TypeError, ValueError, OverflowError):
            raise _prompt_error("invalid_prompt", "number must be a number", repr(number)[:200]) from None
        if number != number or number in (float("inf"), float("-inf")):
            raise _prompt_error("invalid_prompt", "number must be a number", repr(number))
    else:
        number = -state.counter if body.get("front") else state.counter
        state.counter += 1
    if "prompt" not in body:
        raise _prompt_error("no_prompt", "No prompt provided", "No prompt provided")
    prompt = body["prompt"]
    _check_prompt_shape(prompt, body)
    raw_id = body.get("prompt_id")
    prompt_id = str(raw_id) if raw_id is not None else str(uuid.uuid4())
    if state.store.is_queued(prompt_id):
        raise _prompt_error("duplicate_prompt_id", "A prompt with this id is already queued or running", prompt_id)
    targets = body.get("partial_execution_targets")
    if targets is not None and not (isinstance(targets, list) and all(isinstance(t, str) for t in targets)):
        raise _prompt_error("invalid_prompt", "partial_execution_targets must be a list of node ids", repr(targets)[:200])
    extra_data = body.get("extra_data", {})
    if not isinstance(extra_data, dict):
        raise _prompt_error("invalid_prompt", "extra_data must be an object", type(extra_data).__name__)
    result = validate_prompt(state.registry, prompt, targets)
    if not result.ok:
        return _json({"error": result.error, "node_errors": result.node_errors}, status=400)
    sensitive = {k: extra_data.pop(k) for k in SENSITIVE_KEYS if k in extra_data}
    if "client_id" in body:
        extra_data["client_id"] = body["client_id"]
    extra_data["create_time"] = _now_ms()
    item = QueueItem(number, prompt_id, prompt, extra_data, list(result.outputs))
    if sensitive:
        state.sensitive[prompt_id] = sensitive
    state.store.enqueue(item)
    state.broadcast_status()
    return _json({"prompt_id": prompt_id, "number": number, "node_errors": result.node_errors})


def _check_prompt_shape(prompt, body: dict) -> None:
    message = "Prompt must be an object mapping node ids to nodes"
    if not isinstance(prompt, dict):
        looks_like_editor = isinstance(body.get("nodes"), list) or (
            isinstance(prompt, dict) and isinstance(prompt.get("nodes"), list))
        details = ("This is an editor (UI) workflow; convert it to API format first" if looks_like_editor
                   else f"prompt is a {type(prompt).__name__}, not an object")
        raise _prompt_error("invalid_prompt", message, details)
    if isinstance(prompt.get("nodes"), list) and "links" in prompt:
        raise _prompt_error("invalid_prompt", message, "This is an editor (UI) workflow; convert it to API format first")
    bad = next((k for k, v in prompt.items() if not isinstance(v, dict)), None)
    if bad is not None:
        raise _prompt_error("invalid_prompt", message, f"node {bad!r} is not an object")
    if len(prompt) > MAX_PROMPT_NODES:
        raise _prompt_error("invalid_prompt", message, f"more than {MAX_PROMPT_NODES} nodes")


async def get_prompt(request: web.Request) -> web.Response:
    return _json({"exec_info": {"queue_remaining": request.app[STATE].store.remaining()}})


async def get_queue(request: web.Request) -> web.Response:
    running, pending = request.app[STATE].store.list()
    return _json({"queue_running": [i.wire() for i in running], "queue_pending": [i.wire() for i in pending]})


def _id_list(body: dict, key: str) -> list[str] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise BadRequest({"error": f"{key} must be a list of prompt ids"})
    return [str(v) for v in value if isinstance(v, (str, int))]


async def post_queue(request: web.Request) -> web.Response:
    """Clear and/or delete pending prompts; the running one is untouched."""
    state = request.app[STATE]
    body = await _read_json_object(request)
    delete = _id_list(body, "delete")
    if body.get("clear"):
        state.store.delete_pending(None)
        state.broadcast_status()
    if delete:
        state.store.delete_pending(delete)
        state.broadcast_status()
    return _empty()


def _query_int(request: web.Request, name: str) -> int | None:
    try:
        return security.query_int(request.query.get(name))
    except ValueError:
        raise BadRequest({"error": f"{name} must be an integer"}) from None


async def get_history(request: web.Request) -> web.Response:
    max_items = _query_int(request, "max_items")
    offset = _query_int(request, "offset")
    if max_items is not None and max_items < 0:
        max_items = 0
    return _json(request.app[STATE].store.history(max_items, offset))


async def get_history_item(request: web.Request) -> web.Response:
    prompt_id = request.match_info["prompt_id"]
    entry = request.app[STATE].store.history_entry(prompt_id)
    return _json({prompt_id: entry} if entry is not None else {})


async def post_history(request: web.Request) -> web.Response:
    store = request.app[STATE].store
    body = await _read_json_object(request)
    delete = _id_list(body, "delete")
    if body.get("clear"):
        store.delete_history(None)
    if delete:
        store.delete_history(delete)
    return _empty()


async def get_jobs(request: web.Request) -> web.Response:
    store = request.app[STATE].store
    running, pending = store.list()
    try:
        return _json(list_jobs(dict(request.query), running, pending, store.history_jobs))
    except JobQueryError as exc:
        return _error(str(exc))


async def get_job(request: web.Request) -> web.Response:
    store = request.app[STATE].store
    job_id = request.match_info["job_id"]
    entry = store.history_entry(job_id)
    if entry is not None:
        return _json(history_job(job_id, entry, single=True))
    running, pending = store.list()
    for items, status in ((running, "in_progress"), (pending, "pending")):
        for item in items:
            if item.prompt_id == job_id:
                return _json(queue_job(item, status))
    return _error("Job not found", 404)


def _cancel(state: ServerState, job_id: str) -> str:
    """Cancel one job: 'cancelled', 'finished' or 'unknown'."""
    running, pending = state.store.list()
    if any(i.prompt_id == job_id for i in pending) and state.store.delete_pending([job_id]):
        state.broadcast_status()
        return "cancelled"
    if any(i.prompt_id == job_id for i in running) and state.worker.interrupt_prompt(job_id):
        return "cancelled"
    return "finished" if state.store.history_entry(job_id) is not None else "unknown"


async def post_job_cancel(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    outcome = _cancel(request.app[STATE], job_id)
    if outcome == "unknown":
        return _error("Job not found", 404)
    if outcome == "finished":
        return _error("Job already finished", 409)
    return _json({"id": job_id, "cancelled": True})


async def post_jobs_cancel(request: web.Request) -> web.Response:
    body = await _read_json(request)
    ids = body.get("job_ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return _error("job_ids must be a list of strings")
    state = request.app[STATE]
    return _json({"cancelled": [i for i in ids if _cancel(state, i) == "cancelled"]})


async def post_interrupt(request: web.Request) -> web.Response:
    body = await _read_json(request, optional=True)
    prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
    worker = request.app[STATE].worker
    if not worker.interrupt_prompt(str(prompt_id) if prompt_id is not None else None) and prompt_id is not None:
        log.info("interrupt for %s ignored: it is not running", prompt_id)
    return _empty()


async def post_free(request: web.Request) -> web.Response:
    body = await _read_json_object(request)
    request.app[STATE].worker.request_free(bool(body.get("unload_models")), bool(body.get("free_memory")))
    return _empty()


# -- node definitions, models --------------------------------------------------------------------

async def get_object_info(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return _json(state.registry.object_info())


async def get_object_info_class(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return _json(state.registry.object_info(request.match_info["node_class"]))


async def get_embeddings(request: web.Request) -> web.Response:
    names = request.app[STATE].paths.list_files("embeddings")
    return _json([os.path.splitext(n)[0] for n in names])


async def get_models(request: web.Request) -> web.Response:
    return _json([k for k in request.app[STATE].paths.folder_names()])


async def get_models_folder(request: web.Request) -> web.Response:
    paths = request.app[STATE].paths
    folder = request.match_info["folder"]
    if folder not in paths.folder_names():
        return web.Response(status=404)
    return _json(paths.list_files(folder))


async def get_experiment_models(request: web.Request) -> web.Response:
    paths = request.app[STATE].paths
    return _json([{"name": k, "folders": paths.folder_paths(k)} for k in paths.folder_names()
                  if k not in ("configs", "custom_nodes")])


async def get_experiment_models_folder(request: web.Request) -> web.Response:
    paths = request.app[STATE].paths
    folder = request.match_info["folder"]
    if folder not in paths.folder_names() or folder in ("configs", "custom_nodes"):
        return web.Response(status=404)
    listed = set(paths.list_files(folder))
    found = []
    for index, root in enumerate(paths.folder_paths(folder)):
        for name in sorted(listed):
            full = os.path.join(root, name)
            if any(part.startswith(".") for part in name.split("/")) or not os.path.isfile(full):
                continue
            st = os.stat(full)
            found.append({"name": name, "pathIndex": index, "modified": st.st_mtime,
                          "created": st.st_ctime, "size": st.st_size})
    return _json(found)


# -- files ---------------------------------------------------------------------------------------

def _area(paths: Paths, kind: str) -> str:
    try:
        return paths.area_dir(kind)
    except ValueError:
        raise BadRequest({"error": "invalid type"}) from None


def _resolve_view(paths: Paths, filename: str, kind: str, subfolder: str) -> str:
    """api.md §8.1 checks 2-6: the contained real path of a requested file."""
    filename, tag = security.split_annotation(filename)
    if security.bad_relative_name(filename):
        raise BadRequest({"error": "invalid filename"})
    root = _area(paths, tag or kind)
    try:
        folder = paths.contained(root, subfolder) if subfolder else os.path.realpath(root)
        name = filename.replace("\\", "/").rsplit("/", 1)[-1]
        return paths.contained(root, os.path.join(os.path.relpath(folder, os.path.realpath(root)), name))
    except PathEscape:
        raise BadRequest({"error": "path escapes its folder"}, status=403) from None


def _open_image_bounded(path: str):
    """Open an image lazily and refuse oversized ones before decoding (S9)."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        image = Image.open(path)
    except Image.DecompressionBombError:
        raise BadRequest({"error": "image too large"}) from None
    except (OSError, ValueError, SyntaxError):
        raise BadRequest({"error": "not an image"}) from None
    if max(image.size) > MAX_IMAGE_SIDE or image.width * image.height > MAX_IMAGE_PIXELS:
        raise BadRequest({"error": "image too large"})
    try:
        image.load()
    except Image.DecompressionBombError:
        raise BadRequest({"error": "image too large"}) from None
    except (OSError, ValueError, SyntaxError):
        raise BadRequest({"error": "not an image"}) from None
    return image


def _render_view(path: str, preview: str | None, channel: str | None) -> tuple[bytes, str]:
    """Re-encode for `preview` / `channel` (api.md §8.1)."""
    from PIL import Image

    image = _open_image_bounded(path)
    if preview:
        fmt, _, quality = preview.partition(";")
        fmt = fmt if fmt in ("webp", "jpeg") else "webp"
        if channel and "a" in channel:
            fmt = "webp"
        quality_value = int(quality) if quality.strip().isdigit() else 90
        if fmt == "jpeg" or channel == "rgb":
            image = image.convert("RGB")
        buf = io.BytesIO()
        image.save(buf, format=fmt.upper(), quality=min(quality_value, 100))
        return buf.getvalue(), f"image/{fmt}"
    if channel == "rgb":
        out = image.convert("RGB")
    else:   # channel == "a"
        rgba = image.convert("RGBA")
        out = Image.new("RGBA", rgba.size, (0, 0, 0, 0))
        out.putalpha(rgba.getchannel("A"))
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return buf.getvalue(), "image/png"


async def get_view(request: web.Request) -> web.StreamResponse:
    """GET /view: a contained input/output/temp file, inline only for safe media types."""
    paths = request.app[STATE].paths
    query = request.query
    if "filename" not in query:
        return web.Response(status=404)
    path = _resolve_view(paths, query["filename"], query.get("type", "output"), query.get("subfolder", ""))
    if not os.path.isfile(path):
        return web.Response(status=404)
    name = os.path.basename(path)
    headers = {"Content-Security-Policy": security.SANDBOX_CSP, "Cache-Control": "no-cache"}
    preview, channel = query.get("preview"), query.get("channel")
    if preview or channel in ("rgb", "a"):
        data, content_type = await asyncio.get_running_loop().run_in_executor(
            None, _render_view, path, preview, channel)
        headers["Content-Disposition"] = security.content_disposition("inline", name)
        return web.Response(body=data, content_type=content_type, headers=headers)
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if security.served_inline(content_type):
        headers["Content-Disposition"] = security.content_disposition("inline", name)
    else:
        content_type = "application/octet-stream"
        headers["Content-Disposition"] = security.content_disposition("attachment", name)
    headers["Content-Type"] = content_type
    return web.FileResponse(path, headers=headers)


async def _read_upload(request: web.Request, state: ServerState) -> tuple[dict[str, str], str, str]:
    """Stream a multipart upload to a temporary file: (fields, temp path, client filename)."""
    if request.content_length is not None and request.content_length > state.max_body:
        raise web.HTTPRequestEntityTooLarge(max_size=state.max_body, actual_size=request.content_length)
    if not request.content_type.startswith("multipart/"):
        raise BadRequest({"error": "expected multipart/form-data"})
    try:
        return await _stream_upload(request, state)
    except (ValueError, AssertionError, HttpProcessingError) as exc:   # aiohttp's parse errors for bad bodies
        raise BadRequest({"error": f"malformed multipart body: {_first_line(exc)}"}) from None


def _first_line(exc: Exception) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return next((line.strip() for line in str(text).splitlines() if line.strip()), type(exc).__name__)[:200]


async def _stream_upload(request: web.Request, state: ServerState) -> tuple[dict[str, str], str, str]:
    reader = await request.multipart()
    fields: dict[str, str] = {}
    temp_path, filename, total, parts = None, "", 0, 0
    os.makedirs(state.paths.temp_dir, exist_ok=True)
    try:
        while True:
            part = await reader.next()
            if part is None:
                break
            parts += 1
            if parts > MAX_UPLOAD_PARTS:
                raise BadRequest({"error": "too many form parts"})
            if part.name == "image" and part.filename is not None and temp_path is None:
                filename = part.filename
                fd, temp_path = tempfile.mkstemp(prefix=".upload-", dir=state.paths.temp_dir)
                with os.fdopen(fd, "wb") as out:
                    while chunk := await part.read_chunk(1 << 16):
                        total += len(chunk)
                        if total > state.max_body:
                            raise web.HTTPRequestEntityTooLarge(max_size=state.max_body, actual_size=total)
                        out.write(chunk)
            else:
                value = await part.read(decode=False)
                if len(value) > MAX_FIELD_BYTES:
                    raise BadRequest({"error": f"form field {part.name!r} is too large"})
                fields[part.name or ""] = value.decode("utf-8", "replace")
    except BaseException:
        if temp_path:
            os.unlink(temp_path)
        raise
    return fields, temp_path or "", filename


def _file_hash(path: str, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _store_upload(state: ServerState, temp_path: str, filename: str, fields: dict[str, str]) -> dict:
    """Move an uploaded temp file to its contained target, renaming instead of overwriting."""
    kind = fields.get("type") or "input"
    root = _area(state.paths, kind)
    subfolder = fields.get("subfolder", "")
    if not security.safe_upload_name(filename):
        raise BadRequest({"error": "invalid file name"})
    try:
        folder = state.paths.contained(root, subfolder) if subfolder else os.path.realpath(root)
        target = state.paths.contained(root, os.path.join(os.path.relpath(folder, os.path.realpath(root)), filename))
    except PathEscape:
        raise BadRequest({"error": "path escapes its folder"}) from None
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise BadRequest({"error": f"cannot create the subfolder: {exc.strerror}"}) from None
    overwrite = fields.get("overwrite", "").lower() in ("true", "1")
    if os.path.exists(target) and not overwrite:
        algorithm = state.config.default_hashing_function
        if os.path.isfile(target) and _file_hash(target, algorithm) == _file_hash(temp_path, algorithm):
            os.unlink(temp_path)
            return {"name": filename, "subfolder": subfolder, "type": kind}
        stem, ext = os.path.splitext(filename)
        i = 1
        while os.path.exists(os.path.join(folder, f"{stem} ({i}){ext}")):
            i += 1
        filename = f"{stem} ({i}){ext}"
        target = os.path.join(folder, filename)
    try:
        os.replace(temp_path, target)
    except OSError as exc:
        raise BadRequest({"error": f"cannot store the upload: {exc.strerror}"}) from None
    return {"name": filename, "subfolder": subfolder, "type": kind}


def _check_decodes(path: str) -> None:
    """An upload must be an image Pillow decodes within the size limits (issue 3; S9 bombs)."""
    _open_image_bounded(path).close()


async def post_upload_image(request: web.Request) -> web.Response:
    state = request.app[STATE]
    fields, temp_path, filename = await _read_upload(request, state)
    if not temp_path or not filename:
        if temp_path:
            os.unlink(temp_path)
        return web.Response(status=400)
    try:
        await asyncio.to_thread(_check_decodes, temp_path)  # decoding stays off the event loop
        return _json(_store_upload(state, temp_path, filename, fields))
    finally:
        if os.path.exists(temp_path):
            os.unlink(temp_path)


def _apply_mask(original_path: str, mask_path: str, out_path: str) -> None:
    """Original RGBA with the uploaded image's alpha, PNG text chunks kept (api.md §8.3)."""
    from PIL import PngImagePlugin

    original = _open_image_bounded(original_path)
    mask = _open_image_bounded(mask_path)
    info = PngImagePlugin.PngInfo()
    for key, value in getattr(original, "text", {}).items():
        info.add_text(key, value)
    rgba = original.convert("RGBA")
    alpha = mask.convert("RGBA").getchannel("A").resize(rgba.size)
    rgba.putalpha(alpha)
    rgba.save(out_path, format="PNG", compress_level=4, pnginfo=info)


async def post_upload_mask(request: web.Request) -> web.Response:
    state = request.app[STATE]
    fields, temp_path, filename = await _read_upload(request, state)
    try:
        if not temp_path or not filename:
            return web.Response(status=400)
        try:
            ref = json.loads(fields.get("original_ref", ""))
            if not isinstance(ref, dict) or not isinstance(ref.get("filename"), str):
                raise ValueError
        except ValueError:
            return _error("original_ref must be a JSON object with a filename")
        original = _resolve_view(state.paths, ref["filename"], str(ref.get("type") or "output"),
                                 str(ref.get("subfolder") or ""))
        if not os.path.isfile(original):
            return _error("original image not found", 404)
        merged = temp_path + ".png"
        try:
            await asyncio.get_running_loop().run_in_executor(None, _apply_mask, original, temp_path, merged)
            os.replace(merged, temp_path)
        finally:
            if os.path.exists(merged):
                os.unlink(merged)
        return _json(_store_upload(state, temp_path, filename, fields))
    finally:
        if temp_path and os.path.exists(temp_path):
            os.unlink(temp_path)


# -- frontend support ----------------------------------------------------------------------------

def _meminfo() -> tuple[int, int]:
    """(total, available) RAM bytes from /proc/meminfo, or sysconf when unavailable."""
    try:
        with open("/proc/meminfo") as f:
            values = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        return values["MemTotal"], values.get("MemAvailable", values.get("MemFree", 0))
    except (OSError, KeyError, ValueError):
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return total, total


def _kiln_version() -> str:
    try:
        return metadata.version("kiln")
    except metadata.PackageNotFoundError:
        return "0.1.0"


async def get_system_stats(request: web.Request) -> web.Response:
    hooks = request.app[STATE].hooks
    total, free = _meminfo()
    devices = hooks.devices() if hooks.devices is not None else []
    if not devices:
        devices = [{"name": "cpu", "type": "cpu", "index": None, "vram_total": total, "vram_free": free,
                    "torch_vram_total": total, "torch_vram_free": free}]
    return _json({"system": {"os": sys.platform, "ram_total": total, "ram_free": free,
                             "comfyui_version": COMFYUI_API_LEVEL, "kiln_version": _kiln_version(),
                             "required_frontend_version": OLDEST_FRONTEND,
                             "installed_templates_version": "", "required_templates_version": "",
                             "python_version": sys.version, "pytorch_version": hooks.pytorch_version,
                             "embedded_python": False, "argv": sys.argv},
                  "devices": devices})


async def get_features(request: web.Request) -> web.Response:
    return _json(request.app[STATE].features())


async def get_users(request: web.Request) -> web.Response:
    return _json({"storage": "server", "migrated": True})


async def post_users(request: web.Request) -> web.Response:
    return _error("Multi-user mode is not supported")


def _user_root(state: ServerState) -> str:
    root = os.path.join(state.paths.user_dir, "default")
    os.makedirs(root, exist_ok=True)
    return root


def _settings_path(state: ServerState) -> str:
    return os.path.join(_user_root(state), "comfy.settings.json")


def _load_settings(state: ServerState) -> dict:
    try:
        with open(_settings_path(state), encoding="utf-8") as f:
            value = json.load(f)
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_settings(state: ServerState, settings: dict) -> None:
    path = _settings_path(state)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(settings, f, indent=4)
    os.replace(path + ".tmp", path)


async def get_settings(request: web.Request) -> web.Response:
    return _json(_load_settings(request.app[STATE]))


async def get_setting(request: web.Request) -> web.Response:
    return _json(_load_settings(request.app[STATE]).get(request.match_info["setting_id"]))


async def post_settings(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await _read_json_object(request)
    _save_settings(state, {**_load_settings(state), **body})
    return _empty()


async def post_setting(request: web.Request) -> web.Response:
    state = request.app[STATE]
    value = await _read_json(request)
    _save_settings(state, {**_load_settings(state), request.match_info["setting_id"]: value})
    return _empty()


def _user_path(state: ServerState, relative: str) -> str:
    try:
        return state.paths.contained(_user_root(state), relative)
    except PathEscape:
        raise web.HTTPForbidden(text="Invalid path") from None


def _file_info(root: str, path: str) -> dict:
    st = os.stat(path)
    return {"path": os.path.relpath(path, root).replace(os.sep, "/"), "size": st.st_size,
            "modified": st.st_mtime, "created": st.st_ctime}


async def get_userdata_list(request: web.Request) -> web.Response:
    state = request.app[STATE]
    directory = request.query.get("dir", "")
    if not directory:
        return web.Response(status=400, text="Directory not provided")
    try:
        base = state.paths.contained(_user_root(state), directory)
    except PathEscape:
        return web.Response(status=403, text="Invalid directory")
    if not os.path.isdir(base):
        return web.Response(status=404, text="Directory not found")
    recurse = request.query.get("recurse") == "true"
    files = []
    for root, dirs, names in os.walk(base):
        dirs.sort()
        files += [os.path.join(root, n) for n in sorted(names)]
        if not recurse:
            break
    if request.query.get("full_info") == "true":
        return _json([_file_info(base, f) for f in files])
    relative = [os.path.relpath(f, base).replace(os.sep, "/") for f in files]
    if request.query.get("split") == "true":
        return _json([[r, *r.split("/")] for r in relative])
    return _json(relative)


async def get_userdata_v2(request: web.Request) -> web.Response:
    """GET /v2/userdata?path=: every entry below `path`, directories first, then files (by lower-cased name)."""
    state = request.app[STATE]
    root = _user_root(state)
    relative = request.query.get("path", "")
    base = _user_path(state, relative) if relative else os.path.realpath(root)
    if not os.path.exists(base):
        return web.Response(status=404)
    if not os.path.isdir(base):
        return web.Response(status=400)
    dirs, files = [], []
    for current, subdirs, names in os.walk(base):
        for name in subdirs:
            dirs.append({"name": name, "path": os.path.relpath(os.path.join(current, name), os.path.realpath(root))
                         .replace(os.sep, "/"), "type": "directory"})
        for name in names:
            full = os.path.join(current, name)
            st = os.stat(full)
            files.append({"name": name, "path": os.path.relpath(full, os.path.realpath(root)).replace(os.sep, "/"),
                          "type": "file", "size": st.st_size, "modified": st.st_mtime})
    return _json(sorted(dirs, key=lambda e: e["name"].lower()) + sorted(files, key=lambda e: e["name"].lower()))


async def get_userdata_file(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    relative = request.match_info["file"]
    path = _user_path(state, relative)
    if not os.path.isfile(path):
        return web.Response(status=404)
    name = os.path.basename(path)
    headers = {"Content-Security-Policy": security.SANDBOX_CSP}
    if name.endswith(".json"):
        headers["Content-Type"] = "application/json"
    elif relative == "user.css":
        headers["Content-Type"] = "text/css"
    else:
        headers["Content-Type"] = "application/octet-stream"
        headers["Content-Disposition"] = security.content_disposition("attachment", name)
    return web.FileResponse(path, headers=headers)


def _write_reply(state: ServerState, path: str, full_info: bool) -> web.Response:
    root = os.path.realpath(_user_root(state))   # `path` is a realpath too
    return _json(_file_info(root, path) if full_info else os.path.relpath(path, root).replace(os.sep, "/"))


async def post_userdata_file(request: web.Request) -> web.Response:
    state = request.app[STATE]
    path = _user_path(state, request.match_info["file"])
    if os.path.exists(path) and request.query.get("overwrite") == "false":
        return web.Response(status=409, text="File already exists")
    body = await request.read()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(body)
    except OSError as exc:
        return web.Response(status=400, text=f"Could not write the file: {exc.strerror}")
    return _write_reply(state, path, request.query.get("full_info") == "true")


async def delete_userdata_file(request: web.Request) -> web.Response:
    path = _user_path(request.app[STATE], request.match_info["file"])
    if not os.path.isfile(path):
        return web.Response(status=404)
    try:
        os.remove(path)
    except OSError as exc:
        return web.Response(status=400, text=f"Could not delete the file: {exc.strerror}")
    return web.Response(status=204)


async def post_userdata_move(request: web.Request) -> web.Response:
    state = request.app[STATE]
    source = _user_path(state, request.match_info["file"])
    dest = _user_path(state, request.match_info["dest"])
    if not os.path.isfile(source):
        return web.Response(status=404)
    if os.path.exists(dest) and request.query.get("overwrite") == "false":
        return web.Response(status=409, text="File already exists")
    try:
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.replace(source, dest)
    except OSError as exc:   # a name too long for the file system, a folder where the file should go, ...
        return web.Response(status=400, text=f"Could not move the file: {exc.strerror}")
    return _write_reply(state, dest, request.query.get("full_info") == "true")


async def get_empty_object(request: web.Request) -> web.Response:
    """/node_replacements: Kiln advertises no node replacements."""
    return _json({})


def _pack_dirs(state: ServerState) -> list[tuple[str, str]]:
    """(name, directory) of custom-node packs that imported successfully and are folders."""
    return [(p.name, p.path) for p in state.registry.packs if p.ok and os.path.isdir(p.path)]


def _read_json_file(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        log.warning("ignored unreadable JSON file %s", path)
        return None


def _merge(into: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


async def get_i18n(request: web.Request) -> web.Response:
    """Translations from custom_nodes/*/locales/<lang>/ (api.md §10.6)."""
    result: dict = {}
    for _, pack_dir in _pack_dirs(request.app[STATE]):
        locales = os.path.join(pack_dir, "locales")
        for lang in sorted(os.listdir(locales)) if os.path.isdir(locales) else []:
            merged: dict = {}
            for file, key in (("main.json", None), ("nodeDefs.json", "nodeDefs"), ("commands.json", "commands"),
                              ("settings.json", "settings")):
                data = _read_json_file(os.path.join(locales, lang, file))
                if isinstance(data, dict):
                    _merge(merged, data if key is None else {key: data})
            if merged:
                _merge(result.setdefault(lang, {}), merged)
    return _json(result)


TEMPLATE_FOLDERS = ("example_workflows", "example", "examples", "workflow", "workflows")


def _pack_template_dir(pack_dir: str) -> str | None:
    return next((os.path.join(pack_dir, d) for d in TEMPLATE_FOLDERS if os.path.isdir(os.path.join(pack_dir, d))), None)


async def get_workflow_templates(request: web.Request) -> web.Response:
    """{pack: [workflow stems]} from packs' example_workflows/ folders (api.md §10.8)."""
    result = {}
    for name, pack_dir in _pack_dirs(request.app[STATE]):
        folder = _pack_template_dir(pack_dir)
        stems = sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".json")) if folder else []
        if stems:
            result[name] = stems
    return _json(result)


async def get_workflow_template_file(request: web.Request) -> web.StreamResponse:
    pack_dir = dict(_pack_dirs(request.app[STATE])).get(request.match_info["pack"])
    folder = _pack_template_dir(pack_dir) if pack_dir else None
    if folder is None:
        return web.Response(status=404)
    try:
        path = request.app[STATE].paths.contained(folder, request.match_info["file"])
    except PathEscape:
        return web.Response(status=404)
    if not path.endswith(".json") or not os.path.isfile(path):
        return web.Response(status=404)
    return web.FileResponse(path, headers={"Content-Type": "application/json"})


def _subgraphs(state: ServerState) -> dict[str, tuple[dict, str]]:
    """id -> (summary, file path) for packs' subgraphs/*.json blueprints (api.md §10.7)."""
    found = {}
    for name, pack_dir in _pack_dirs(state):
        folder = os.path.join(pack_dir, "subgraphs")
        for file in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            if file.endswith(".json"):
                path = os.path.join(folder, file)
                key = hashlib.sha256(("custom_node" + path).encode()).hexdigest()
                found[key] = ({"source": "custom_node", "name": file[:-5],
                               "info": {"node_pack": f"custom_nodes.{name}"}}, path)
    return found


async def get_global_subgraphs(request: web.Request) -> web.Response:
    return _json({key: summary for key, (summary, _) in _subgraphs(request.app[STATE]).items()})


async def get_global_subgraph(request: web.Request) -> web.Response:
    found = _subgraphs(request.app[STATE]).get(request.match_info["subgraph_id"])
    if found is None:
        return _error("not found", 404)
    summary, path = found
    with open(path, encoding="utf-8") as f:
        return _json({**summary, "data": f.read()})


async def get_extensions(request: web.Request) -> web.Response:
    state = request.app[STATE]
    found = []
    ext_root = os.path.join(state.web_root, "extensions")
    for root, dirs, files in os.walk(ext_root):
        dirs.sort()
        found += ["/extensions/" + os.path.relpath(os.path.join(root, f), ext_root).replace(os.sep, "/")
                  for f in sorted(files) if f.endswith(".js")]
    for pack, web_dir in _pack_web_dirs(state).items():
        for root, dirs, files in os.walk(web_dir):
            dirs.sort()
            found += [f"/extensions/{quote(pack)}/" + os.path.relpath(os.path.join(root, f), web_dir).replace(os.sep, "/")
                      for f in sorted(files) if f.endswith(".js")]
    return _json(found)


def _pack_web_dirs(state: ServerState) -> dict[str, str]:
    """pack name -> absolute WEB_DIRECTORY of loaded custom-node packs."""
    return dict(state.registry.web_directories)


async def get_templates_index(request: web.Request) -> web.Response:
    """The shipped editor workflows in the official templates-index shape (contracts.md §4); [] when none."""
    root = request.app[STATE].workflows_dir
    names = sorted(os.listdir(root)) if os.path.isdir(root) else []
    stems = [n[:-5] for n in names if n.endswith(".json") and not n.startswith(".")]
    if not stems:
        return _json([])
    templates = [{"name": stem, "title": stem.replace("_", " ").capitalize(), "description": "",
                  "mediaType": "image", "mediaSubtype": "webp"} for stem in stems]
    return _json([{"moduleName": "default", "title": "Kiln", "type": "image", "templates": templates}])


async def get_template(request: web.Request) -> web.StreamResponse:
    """/templates/<stem>.json: one shipped workflow file."""
    state = request.app[STATE]
    try:
        path = state.paths.contained(state.workflows_dir, request.match_info["name"] + ".json")
    except PathEscape:
        return web.Response(status=404)
    if not os.path.isfile(path):
        return web.Response(status=404)
    return web.FileResponse(path, headers={"Content-Type": "application/json", "Cache-Control": "no-cache"})


async def get_view_metadata(request: web.Request) -> web.Response:
    """The `__metadata__` of a listed .safetensors model file (header read capped at 1 MiB)."""
    paths = request.app[STATE].paths
    name = request.query.get("filename", "")
    if not name.endswith(".safetensors"):
        return web.Response(status=404)
    try:
        path = paths.full_path(request.match_info["folder"], name)
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > 1 << 20:
                return web.Response(status=404)
            header = json.loads(f.read(length))
    except (KeyError, OSError, ValueError, struct.error):
        return web.Response(status=404)
    metadata_value = header.get("__metadata__") if isinstance(header, dict) else None
    return _json(metadata_value) if isinstance(metadata_value, dict) else web.Response(status=404)


async def get_internal_logs(request: web.Request) -> web.Response:
    return _json("".join(f"{e['t']} - {e['m']}" for e in request.app[STATE].logs.entries))


async def get_internal_logs_raw(request: web.Request) -> web.Response:
    return _json({"entries": list(request.app[STATE].logs.entries), "size": {"cols": 80, "rows": 24}})


async def patch_internal_logs_subscribe(request: web.Request) -> web.Response:
    body = await _read_json_object(request)
    sid = body.get("clientId")
    if not isinstance(sid, str):
        return _error("clientId must be a string")
    subscribers = request.app[STATE].logs.subscribers
    if body.get("enabled"):
        subscribers.add(sid)
    else:
        subscribers.discard(sid)
    return _empty()


async def get_internal_folder_paths(request: web.Request) -> web.Response:
    paths = request.app[STATE].paths
    return _json({k: paths.folder_paths(k) for k in paths.folder_names()})


async def get_internal_files(request: web.Request) -> web.Response:
    paths = request.app[STATE].paths
    kind = request.match_info["kind"]
    if kind not in ("input", "output", "temp"):
        return _error("Invalid directory type")
    root = paths.area_dir(kind)
    entries = [e for e in os.scandir(root) if not e.name.startswith(".") and e.is_file()] if os.path.isdir(root) else []
    entries.sort(key=lambda e: e.stat().st_mtime, reverse=True)
    return _json([e.name for e in entries])


# -- WebSocket -----------------------------------------------------------------------------------

async def websocket(request: web.Request) -> web.WebSocketResponse:
    """GET /ws?clientId=: status with sid first, then routed events (api.md §11)."""
    state = request.app[STATE]
    ws = web.WebSocketResponse(max_msg_size=MAX_WS_MESSAGE, heartbeat=30)
    await ws.prepare(request)
    sid = request.query.get("clientId") or uuid.uuid4().hex
    client = Client(ws, sid)
    state.hub.clients[sid] = client
    pump = asyncio.create_task(client.pump())
    client.push(json.dumps({"type": "status", "data": {
        "status": {"exec_info": {"queue_remaining": state.store.remaining()}}, "sid": sid}}))
    worker = state.worker
    running = worker.running
    if running is not None and running.extra_data.get("client_id") == sid and worker.current_node is not None:
        client.push(json.dumps({"type": "executing", "data": {"node": worker.current_node}}))
    first = True
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            if first:
                first = False
                try:
                    message = json.loads(msg.data)
                except ValueError:
                    log.info("ignored a malformed WebSocket message from %s", sid)
                    continue
                if isinstance(message, dict) and message.get("type") == "feature_flags":
                    client.flags = message.get("data") if isinstance(message.get("data"), dict) else {}
                    client.push(json.dumps({"type": "feature_flags", "data": state.features()}))
    finally:
        if state.hub.clients.get(sid) is client:
            del state.hub.clients[sid]
        client.wakeup.set()
        pump.cancel()
    return ws


# -- static files --------------------------------------------------------------------------------

async def get_index(request: web.Request) -> web.StreamResponse:
    index = os.path.join(request.app[STATE].web_root, "index.html")
    if not os.path.isfile(index):
        return web.Response(status=404, text="No editor found in the web root")
    return web.FileResponse(index, headers={"Cache-Control": "no-cache", "Pragma": "no-cache", "Expires": "0",
                                            "Content-Type": "text/html"})


SCRIPTABLE_DOCUMENTS = frozenset({"text/html", "image/svg+xml", "application/xhtml+xml", "text/xml",
                                  "application/xml"})


async def get_pack_file(request: web.Request) -> web.StreamResponse:
    """/extensions/<pack>/<path>: a pack's WEB_DIRECTORY, contained, symlinks not followed out."""
    state = request.app[STATE]
    pack, relative = request.match_info["pack"], request.match_info["path"]
    roots = _pack_web_dirs(state)
    try:
        if pack in roots:
            path = state.paths.contained(roots[pack], relative)
        else:   # the web root's own extensions/: the pack name is part of the contained path, never the root
            path = state.paths.contained(os.path.join(state.web_root, "extensions"), f"{pack}/{relative}")
    except PathEscape:
        return web.Response(status=404)
    if not os.path.isfile(path):
        return web.Response(status=404)
    headers = {}
    if (mimetypes.guess_type(path)[0] or "") in SCRIPTABLE_DOCUMENTS:
        headers["Content-Security-Policy"] = security.SANDBOX_CSP   # a pack page must not script Kiln's origin
    return web.FileResponse(path, headers=headers)


async def get_static(request: web.Request) -> web.StreamResponse:
    """Files of the web root; a path that names a POST-only route answers 405, not 404 (S5)."""
    state = request.app[STATE]
    try:
        path = state.paths.contained(state.web_root, request.match_info["path"])
    except PathEscape:
        path = ""
    if path and os.path.isfile(path):
        return web.FileResponse(path)
    for resource in request.app.router.resources():
        if resource is request.match_info.route.resource:
            continue
        match, allowed = await resource.resolve(request)
        if match is None and allowed:
            raise web.HTTPMethodNotAllowed(request.method, allowed)
    return web.Response(status=404)


# -- application ---------------------------------------------------------------------------------

API_ROUTES: list[tuple[str, str, Callable]] = [
    ("GET", "/ws", websocket),
    ("POST", "/prompt", post_prompt),
    ("GET", "/prompt", get_prompt),
    ("GET", "/queue", get_queue),
    ("POST", "/queue", post_queue),
    ("GET", "/history", get_history),
    ("GET", "/history/{prompt_id}", get_history_item),
    ("POST", "/history", post_history),
    ("GET", "/jobs", get_jobs),
    ("POST", "/jobs/cancel", post_jobs_cancel),
    ("GET", "/jobs/{job_id}", get_job),
    ("POST", "/jobs/{job_id}/cancel", post_job_cancel),
    ("POST", "/interrupt", post_interrupt),
    ("POST", "/free", post_free),
    ("GET", "/object_info", get_object_info),
    ("GET", "/object_info/{node_class}", get_object_info_class),
    ("GET", "/view", get_view),
    ("POST", "/upload/image", post_upload_image),
    ("POST", "/upload/mask", post_upload_mask),
    ("GET", "/view_metadata/{folder}", get_view_metadata),
    ("GET", "/embeddings", get_embeddings),
    ("GET", "/models", get_models),
    ("GET", "/models/{folder}", get_models_folder),
    ("GET", "/experiment/models", get_experiment_models),
    ("GET", "/experiment/models/{folder}", get_experiment_models_folder),
    ("GET", "/extensions", get_extensions),
    ("GET", "/system_stats", get_system_stats),
    ("GET", "/features", get_features),
    ("GET", "/users", get_users),
    ("POST", "/users", post_users),
    ("GET", "/settings", get_settings),
    ("POST", "/settings", post_settings),
    ("GET", "/settings/{setting_id}", get_setting),
    ("POST", "/settings/{setting_id}", post_setting),
    ("GET", "/userdata", get_userdata_list),
    ("GET", "/v2/userdata", get_userdata_v2),
    ("POST", "/userdata/{file}/move/{dest}", post_userdata_move),
    ("GET", "/userdata/{file}", get_userdata_file),
    ("POST", "/userdata/{file}", post_userdata_file),
    ("DELETE", "/userdata/{file}", delete_userdata_file),
    ("GET", "/i18n", get_i18n),
    ("GET", "/global_subgraphs", get_global_subgraphs),
    ("GET", "/global_subgraphs/{subgraph_id}", get_global_subgraph),
    ("GET", "/workflow_templates", get_workflow_templates),
    ("GET", "/workflow_templates/{pack}/{file}", get_workflow_template_file),
    ("GET", "/node_replacements", get_empty_object),
]


def _add_pack_routes(app: web.Application) -> None:
    """Routes custom-node packs registered on PromptServer.instance.routes, also under /api."""
    for method, path, target, kwargs in app[STATE].registry.bridge.committed_routes():
        if method == "STATIC":
            app.router.add_static(path, target, follow_symlinks=False)
            continue
        for prefix in ("", "/api"):
            app.router.add_route(method, prefix + path, target, **kwargs)


def setup_routes(app: web.Application) -> None:
    """Every API route twice (bare and /api), then /internal, custom-node routes and static files."""
    router = app.router
    for prefix in ("", "/api"):
        for method, path, handler in API_ROUTES:
            if method == "GET":
                router.add_get(prefix + path, handler)   # with HEAD
            else:
                router.add_route(method, prefix + path, handler)
    _add_pack_routes(app)
    router.add_get("/internal/logs", get_internal_logs)
    router.add_get("/internal/logs/raw", get_internal_logs_raw)
    router.add_patch("/internal/logs/subscribe", patch_internal_logs_subscribe)
    router.add_get("/internal/folder_paths", get_internal_folder_paths)
    router.add_get("/internal/files/{kind}", get_internal_files)
    router.add_get("/", get_index)
    router.add_get("/templates/index.json", get_templates_index)
    router.add_get("/templates/{name}.json", get_template)
    router.add_get("/extensions/{pack}/{path:.+}", get_pack_file)
    router.add_get("/{path:.+}", get_static)


def _resolve_token(config: RuntimeConfig, paths: Paths) -> str | None:
    """--token, the KILN_TOKEN environment variable, --token-file or --generate-token (stored 0600)."""
    if config.token:
        return config.token
    if os.environ.get("KILN_TOKEN"):
        return os.environ["KILN_TOKEN"]
    if config.token_file:
        with open(config.token_file, encoding="utf-8") as f:
            return f.read().strip()
    if config.generate_token:
        os.makedirs(paths.user_dir, exist_ok=True)
        path = os.path.join(paths.user_dir, "kiln_token")
        token = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token)
        return token
    return None


def security_policy(config: RuntimeConfig, paths: Paths) -> security.SecurityPolicy:
    cors = config.enable_cors_header
    return security.SecurityPolicy(
        token=_resolve_token(config, paths), allowed_hosts=tuple(config.allowed_hosts),
        allowed_origins=tuple(config.allowed_origins), cors_origins=(cors,) if cors else ())


def create_app(config: RuntimeConfig, registry, executor, *, paths: Paths | None = None,
               store: PromptStore | None = None, system_hooks: SystemHooks | None = None,
               policy: security.SecurityPolicy | None = None) -> web.Application:
    """Build the application; the worker thread and the store live in its cleanup context."""
    paths = paths or registry.paths
    max_body = int(config.max_upload_size * 1024 * 1024)
    state = ServerState(
        config=config, registry=registry, executor=executor, paths=paths,
        store=store or SqliteStore(os.path.join(paths.user_dir, "kiln_queue.sqlite3"), config.max_history),
        policy=policy or security_policy(config, paths), hooks=system_hooks or SystemHooks(),
        web_root=os.path.abspath(config.front_end_root or DEFAULT_WEB_ROOT),
        max_body=max_body)
    state.counter = state.store.next_number()
    app = web.Application(middlewares=[security_middleware], client_max_size=max_body)
    app[STATE] = state
    app.on_response_prepare.append(_add_headers)
    app.cleanup_ctx.append(_runtime_context)
    setup_routes(app)
    return app


async def _runtime_context(app: web.Application):
    """Start the worker thread and the log console with the loop; stop them and close the store on shutdown."""
    state = app[STATE]
    state.loop = asyncio.get_running_loop()
    state.logs = LogBuffer(state)
    logging.getLogger().addHandler(state.logs)
    os.makedirs(os.path.join(state.paths.user_dir, "default"), exist_ok=True)
    state.worker = Worker(state)
    bridge = state.registry.bridge
    bridge.sender = state.worker.post_pack_message
    state.worker.thread.start()
    yield
    bridge.sender = None
    logging.getLogger().removeHandler(state.logs)
    state.worker.stop.set()
    state.worker.interrupt.set()
    await asyncio.get_running_loop().run_in_executor(None, state.worker.thread.join, 10)
    for client in list(state.hub.clients.values()):
        await client.ws.close()
    state.store.close()


def run_server(config: RuntimeConfig, registry, executor, *, system_hooks: SystemHooks | None = None) -> None:
    """Serve until interrupted (main.py's `serve`); exits non-zero on an unsafe configuration."""
    paths = registry.paths
    policy = security_policy(config, paths)
    hosts = tuple(h.strip() for h in config.listen.split(",") if h.strip())
    problem = security.startup_problem(hosts, policy, config.allow_unauthenticated_remote)
    if problem:
        raise SystemExit(f"kiln: {problem}")
    if config.allow_unauthenticated_remote and any(not security.is_loopback_name(h) for h in hosts):
        log.warning("listening on %s WITHOUT authentication (--allow-unauthenticated-remote)", ", ".join(hosts))
    app = create_app(config, registry, executor, paths=paths, policy=policy, system_hooks=system_hooks)
    shown = f"[{hosts[0]}]" if ":" in hosts[0] else hosts[0]
    if config.generate_token and policy.token:
        print(f"Kiln editor: http://{shown}:{config.port}/?token={policy.token}", flush=True)
    log.info("Kiln is serving on %s (port %d)%s", ", ".join(hosts), config.port,
             "; a token is required" if policy.token else "")
    web.run_app(app, host=list(hosts), port=config.port, print=lambda *_: None,
                access_log=None, handle_signals=True)
