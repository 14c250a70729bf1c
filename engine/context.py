"""The node context of the node running now, so compatibility shims can report progress/interrupt."""
from __future__ import annotations

import contextvars
import threading
from typing import Any, Callable

from engine.errors import Interrupted

_current: contextvars.ContextVar["RunContext | None"] = contextvars.ContextVar("kiln_node_ctx", default=None)
# The interrupt flag of the executor run in progress (shims' `interrupt_current_processing`).
_active_interrupt: threading.Event | None = None


class RunContext:
    """The `ctx` given to a node: ids, paths, config, progress with previews, interrupt, warnings."""

    __slots__ = ("node_id", "prompt_id", "paths", "config", "call_index", "_graph_index", "_emit_progress",
                 "_interrupt", "_warn", "display_node_id")

    def __init__(self, node_id: str, prompt_id: str, paths: Any, config: Any, interrupt: threading.Event,
                 emit_progress: Callable[[str, float, float, tuple | None], None],
                 warn: Callable[[str, str], None], display_node_id: str | None = None):
        self.node_id = node_id
        self.display_node_id = display_node_id or node_id
        self.prompt_id = prompt_id
        self.paths = paths
        self.config = config
        self.call_index = 0
        self._graph_index = 0
        self._interrupt = interrupt
        self._emit_progress = emit_progress
        self._warn = warn

    def check_interrupt(self) -> None:
        """Raise Interrupted (and clear the flag) when the user interrupted."""
        if self._interrupt.is_set():
            self._interrupt.clear()
            raise Interrupted("Processing interrupted")

    def progress(self, value: float, total: float, preview: tuple | None = None) -> None:
        """Report progress (optionally with a ("JPEG"|"PNG", image, max_size) preview)."""
        self.check_interrupt()
        self._emit_progress(self.node_id, value, total, preview)

    def warn(self, text: str) -> None:
        self._warn(self.node_id, text)

    def begin_call(self, index: int) -> None:
        """A new call of the node function under list mapping (§5): GraphBuilder indices restart."""
        self.call_index = index
        self._graph_index = 0

    def next_graph_index(self) -> int:
        """Index of the next GraphBuilder made during this call (ephemeral id prefixes)."""
        i = self._graph_index
        self._graph_index += 1
        return i


def static_context(node_id: str, paths: Any, config: Any) -> RunContext:
    """A context for VALIDATE_INPUTS / IS_CHANGED functions that take `ctx`: files, config, no progress."""
    return RunContext(node_id, "", paths, config, threading.Event(), lambda *_: None, lambda *_: None)


def current() -> RunContext | None:
    """The context of the node running on this thread, or None outside node execution."""
    return _current.get()


def set_current(ctx: RunContext | None):
    return _current.set(ctx)


def reset_current(token) -> None:
    _current.reset(token)


def set_active_interrupt(event: threading.Event | None) -> None:
    global _active_interrupt
    _active_interrupt = event


def request_interrupt(value: bool = True) -> None:
    """Set (or clear) the interrupt flag of the run in progress; a no-op when idle."""
    ev = _active_interrupt
    if ev is not None:
        ev.set() if value else ev.clear()


def interrupt_requested() -> bool:
    ev = _active_interrupt
    return bool(ev is not None and ev.is_set())
