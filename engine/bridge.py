"""The aiohttp-free bridge behind `server.PromptServer.instance` for custom-node packs.

Packs register routes at import time, before any server exists: they are buffered here per pack and
kept only when the pack imports successfully. The server (engine/server.py) later reads
`committed_routes()` and sets `sender` so `send_sync` reaches WebSocket clients.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger("kiln.bridge")

_METHODS = ("get", "post", "put", "patch", "delete", "head", "options")


class RouteBuffer:
    """Quacks like aiohttp's RouteTableDef: `@routes.get(path)` etc. record (method, path, handler, kwargs)."""

    def __init__(self, bridge: "ServerBridge"):
        self._bridge = bridge

    def route(self, method: str, path: str, **kwargs) -> Callable:
        def register(handler: Callable) -> Callable:
            self._bridge._pending.append((method.upper(), path, handler, kwargs))
            return handler

        return register

    def __getattr__(self, name: str):
        if name in _METHODS:
            return lambda path, **kwargs: self.route(name, path, **kwargs)
        if name == "view":
            return lambda path, **kwargs: self.route("*", path, **kwargs)
        raise AttributeError(name)

    def static(self, prefix: str, path: str, **kwargs) -> None:
        self._bridge._pending.append(("STATIC", prefix, path, kwargs))

    def __iter__(self):
        return iter(self._bridge.committed_routes())

    def __len__(self):
        return len(self._bridge.committed_routes())


class ServerBridge:
    """What packs see as PromptServer.instance: routes, send_sync, on-prompt hooks, client/node ids."""

    def __init__(self):
        self.routes = RouteBuffer(self)
        self._pending: list[tuple] = []
        self._committed: list[tuple] = []
        self.sender: Callable[[str, Any, str | None], None] | None = None
        self.on_prompt_handlers: list[Callable[[dict], dict]] = []
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self.last_prompt_id: str | None = None

    # -- pack loading (called by the registry) ---------------------------------------------------
    def begin_pack(self) -> None:
        self._pending = []

    def commit_pack(self) -> None:
        self._committed.extend(self._pending)
        self._pending = []

    def discard_pack(self) -> None:
        self._pending = []

    def committed_routes(self) -> list[tuple]:
        """(METHOD, path, handler, kwargs) tuples; METHOD "STATIC" means (prefix, directory)."""
        return list(self._committed)

    # -- what packs call ---------------------------------------------------------------------------
    def send_sync(self, event: str, data: Any, sid: str | None = None) -> None:
        """Forward a message to WebSocket clients (dropped with a debug log when no server runs)."""
        if self.sender is None:
            log.debug("send_sync(%s) with no server attached", event)
            return
        self.sender(event, data, sid)

    def send_progress_text(self, text: str, node_id: str, sid: str | None = None) -> None:
        self.send_sync("progress_text", {"text": text, "node_id": node_id}, sid)

    def add_on_prompt_handler(self, handler: Callable[[dict], dict]) -> None:
        self.on_prompt_handlers.append(handler)

    def trigger_on_prompt(self, json_data: dict) -> dict:
        """Run the packs' on-prompt hooks; a hook that raises is logged and skipped (api.md §1.1)."""
        for handler in self.on_prompt_handlers:
            try:
                json_data = handler(json_data)
            except Exception:
                log.exception("on_prompt handler %r failed", handler)
        return json_data
