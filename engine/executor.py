"""Runs one validated prompt: cache lookup, scheduling, lazy inputs, list mapping, expansion, events."""
from __future__ import annotations

import asyncio
import heapq
import inspect
import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from engine import context as ctxmod
from engine.cache import CacheEntry, OutputCache, canonical, compute_keys, make_cache, Unhashable
from engine.config import RuntimeConfig
from engine.errors import DependencyCycleError, Interrupted, NodeInputError
from engine.graph import DynamicPrompt, ExecutionBlocker, is_link
from engine.registry import InputInfo, Registry, input_table
from engine.schema import NodeOutput
from engine.validate import exception_type_name

log = logging.getLogger("kiln.executor")

Emit = Callable[[str, dict], None]


@dataclass
class RunResult:
    """Outcome of one prompt: status, history messages, UI outputs and their meta per node."""

    status: str                      # "success" | "error" | "interrupted"
    messages: list = field(default_factory=list)
    outputs: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    executed: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    error: dict | None = None


def _now() -> int:
    return int(time.time() * 1000)


class Executor:
    """Executes prompts one at a time; output and instance caches persist between runs."""

    def __init__(self, registry: Registry, cache: OutputCache | None = None, paths=None,
                 config: RuntimeConfig | None = None):
        self.registry = registry
        self.cache = cache if cache is not None else make_cache("classic")
        self.paths = paths if paths is not None else registry.paths
        self.config = config if config is not None else RuntimeConfig()
        self.objects: dict[tuple[str, str], Any] = {}
        self.unload_hooks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def free(self, unload_models: bool = False, free_memory: bool = False) -> None:
        """Drop cached outputs and node instances (free_memory) and/or unload models (hooks); waits for a run."""
        with self._lock:
            if free_memory:
                self.cache.clear()
                self.objects.clear()
            if unload_models or free_memory:
                for hook in self.unload_hooks:
                    hook()

    def run(self, prompt_id: str, prompt: dict, *, extra_data: dict | None = None,
            outputs: list[str] | None = None, emit: Emit | None = None,
            interrupt: threading.Event | None = None) -> RunResult:
        """Run `prompt` (already validated) for the given output roots; never raises for node errors."""
        with self._lock:
            run = _Run(self, prompt_id, prompt, extra_data or {}, outputs, emit,
                       interrupt if interrupt is not None else threading.Event())
            ctxmod.set_active_interrupt(run.interrupt)
            try:
                result = run.execute()
                if run.out_of_memory:   # models are unloaded before the next prompt; caches are kept
                    for hook in self.unload_hooks:
                        hook()
                return result
            finally:
                run._close_loop()
                ctxmod.set_active_interrupt(None)
                run.interrupt.clear()


class _Failure(Exception):
    def __init__(self, node_id: str, exc: BaseException, inputs: Any):
        super().__init__(str(exc))
        self.node_id, self.exc, self.inputs = node_id, exc, inputs


@dataclass
class _NodeState:
    announced: bool = False
    expansion: list | None = None   # per-call result tuples (may contain links) awaiting their sources
    ui: list | None = None
    tasks: list | None = None       # per-call asyncio tasks (or values) of an async node still running
    data: dict | None = None        # its inputs, for the error report


class _Run:
    def __init__(self, ex: Executor, prompt_id, prompt, extra_data, outputs, emit, interrupt):
        self.ex = ex
        self.registry = ex.registry
        self.cache = ex.cache
        self.prompt_id = prompt_id
        self.prompt = prompt
        self.extra_data = extra_data
        self.emit_fn = emit
        self.interrupt = interrupt
        self.dyn = DynamicPrompt(prompt)
        self.roots = list(outputs) if outputs is not None else [
            nid for nid, n in prompt.items() if self._spec(n["class_type"]).output_node]
        self.result = RunResult("success")
        self.values: dict[str, list[list]] = {}
        self.keys: dict[str, int | None] = {}
        self.tables: dict[str, dict[str, InputInfo]] = {}
        self.state: dict[str, _NodeState] = {}
        self.progress: dict[str, dict] = {}
        self.reported_blockers: set[int] = set()
        # execution list
        self.pending: dict[str, int] = {}
        self.blocking: dict[str, set[str]] = {}
        self.consumers: dict[str, set[str]] = {}
        self.ready: list[list] = [[], [], [], []]
        self.in_ready: set[str] = set()
        self.counter = 0
        self.output_flags: dict[str, bool] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.out_of_memory = False
        self.current: str | None = None
        self.allowed: dict[str, frozenset] = {}

    # -- helpers -----------------------------------------------------------------------------------
    def emit(self, event: str, data: dict) -> None:
        if self.emit_fn is not None:
            self.emit_fn(event, data)

    def _spec(self, class_type):
        spec = self.registry.get(class_type)
        if spec is None:
            raise NodeInputError(f"node type {class_type!r} does not exist")
        return spec

    def table(self, class_type: str) -> dict[str, InputInfo]:
        t = self.tables.get(class_type)
        if t is None:
            t = self.tables[class_type] = input_table(self._spec(class_type).input_types(self.ex.paths))
        return t

    def _class_info(self, class_type: str) -> tuple[bool]:
        spec = self.registry.get(class_type)
        if spec is None:
            return (True,)
        uid = any(i.category == "hidden" and i.type == "UNIQUE_ID" for i in self.table(class_type).values())
        return (spec.not_idempotent or uid,)

    def has_value(self, nid: str) -> bool:
        if nid in self.values:
            return True
        entry = self.cache.get(self.keys.get(nid))
        if entry is not None:
            self.values[nid] = entry.outputs
            return True
        return False

    def _progress_state(self, nid: str, value: float, maximum: float, state: str) -> None:
        if self.emit_fn is None:
            return
        self.progress[nid] = {"value": value, "max": maximum, "state": state, "node_id": nid,
                              "prompt_id": self.prompt_id, "display_node_id": self.dyn.display_id(nid),
                              "parent_node_id": self.dyn.parent_id(nid), "real_node_id": self.dyn.real_id(nid)}
        self.emit("progress_state", {"prompt_id": self.prompt_id, "nodes": dict(self.progress)})

    # -- the run -------------------------------------------------------------------------------------
    def execute(self) -> RunResult:
        self.interrupt.clear()
        msg = {"prompt_id": self.prompt_id, "timestamp": _now()}
        self.result.messages.append(["execution_start", msg])
        self.emit("execution_start", dict(msg))
        try:
            fingerprints = self._fingerprints()
            compute_keys(self._node_or_none, list(self.prompt), class_info=self._class_info,
                         fingerprints=fingerprints, memo=self.keys, interner=self.cache.interner)
        except Exception as exc:  # a broken INPUT_TYPES at run time
            return self._fail(_Failure(next(iter(self.prompt), ""), exc, {}))
        self.cache.start_prompt({k for k in self.keys.values() if k is not None},
                                {(nid, n["class_type"]) for nid, n in self.prompt.items()})
        if self.cache.kind == "none":
            self.ex.objects.clear()
        elif self.cache.kind == "classic":
            live = {(nid, n["class_type"]) for nid, n in self.prompt.items()}
            self.ex.objects = {k: v for k, v in self.ex.objects.items() if k in live}
        cached = [nid for nid in self.prompt if self.has_value(nid)]
        msg = {"nodes": cached, "prompt_id": self.prompt_id, "timestamp": _now()}
        self.result.messages.append(["execution_cached", msg])
        self.emit("execution_cached", dict(msg, nodes=list(cached)))
        try:
            for root in self.roots:
                if root in self.values:
                    self._report_cached_root(root)
            for root in self.roots:
                self.add(root)
            while self.pending:
                nid = self.pick()
                if nid is None:
                    waiting = self._waiting()
                    if not waiting:
                        raise DependencyCycleError("Dependency cycle detected")
                    self._wait_for_tasks(waiting)
                    continue
                self.current = nid
                if self.run_node(nid):
                    self.complete(nid)
                    self.cache.after_node()
        except _Failure as failure:
            return self._fail(failure)
        except Interrupted as exc:
            return self._fail(_Failure(next(iter(self.pending), ""), exc, {}))
        except DependencyCycleError:
            blamed = next((n for n in self.pending if n in self.dyn.ephemeral), next(iter(self.pending)))
            data = {"prompt_id": self.prompt_id, "node_id": self.dyn.display_id(blamed),
                    "node_type": self.dyn.get_node(blamed).get("class_type"), "executed": list(self.result.executed),
                    "exception_message": "Dependency cycle detected", "exception_type": "graph.DependencyCycleError",
                    "traceback": [], "current_inputs": [], "current_outputs": list(self.prompt), "timestamp": _now()}
            return self._finish_error("execution_error", data, "error")
        except Exception as exc:   # merging/storing a malformed result: still that node's error
            return self._fail(_Failure(self.current or "", exc, {}))
        msg = {"prompt_id": self.prompt_id, "timestamp": _now()}
        self.result.messages.append(["execution_success", msg])
        self.emit("execution_success", dict(msg))
        return self.result

    def _node_or_none(self, nid: str) -> dict | None:
        return self.prompt.get(nid) or self.dyn.ephemeral.get(nid)

    def _fingerprints(self) -> dict[str, str | None]:
        """IS_CHANGED per node (§8.2): constants, None for links, hidden values; NaN/errors never match."""
        out: dict[str, str | None] = {}
        for nid, node in self.prompt.items():
            spec = self._spec(node["class_type"])
            if spec.is_changed is None:
                continue
            data = {k: [None if is_link(v) else v] for k, v in (node.get("inputs") or {}).items()}
            for info in self.table(node["class_type"]).values():
                if info.category == "hidden":
                    hidden = {"UNIQUE_ID": nid, "PROMPT": {}, "EXTRA_PNGINFO": None}
                    if info.type in hidden:
                        data[info.name] = [hidden[info.type]]
            if "ctx" in _parameter_names(spec.is_changed):  # native nodes hashing files via ctx.paths
                data["ctx"] = [ctxmod.static_context(nid, self.ex.paths, self.ex.config)]
            try:
                values = _map_calls(lambda **kw: _call(spec.is_changed, kw), data, spec.input_is_list, None)
                out[nid] = canonical([None if isinstance(v, ExecutionBlocker) else v for v in values])
            except Unhashable:
                out[nid] = None
            except Exception as exc:
                log.warning("IS_CHANGED of node %s (%s) failed: %s", nid, node["class_type"], exc)
                out[nid] = None
        return out

    def _report_cached_root(self, nid: str) -> None:
        entry = self.cache.get(self.keys.get(nid))
        ui = entry.ui if entry is not None else None
        self.emit("executed", {"node": nid, "display_node": self.dyn.display_id(nid), "output": ui,
                               "prompt_id": self.prompt_id})
        if ui:
            self._record_ui(nid, ui)
        self.progress[nid] = {"value": 1, "max": 1, "state": "finished", "node_id": nid, "prompt_id": self.prompt_id,
                              "display_node_id": nid, "parent_node_id": None, "real_node_id": nid}
        if self.emit_fn is not None:
            self.emit("progress_state", {"prompt_id": self.prompt_id,
                                         "nodes": dict(self.progress)})

    def _record_ui(self, nid: str, ui: dict) -> None:
        self.result.outputs[nid] = ui
        self.result.meta[nid] = {"node_id": nid, "display_node": self.dyn.display_id(nid),
                                 "parent_node": self.dyn.parent_id(nid), "real_node_id": self.dyn.real_id(nid)}

    # -- execution list ------------------------------------------------------------------------------
    def add(self, root: str) -> None:
        """Put `root` and its not-yet-available non-lazy ancestors into the execution list (iteratively)."""
        if root in self.pending or self.has_value(root):
            return
        self._register(root)
        stack = [root]
        while stack:
            nid = stack.pop()
            node = self._node_or_none(nid)
            if node is None:
                raise _Failure(nid, NodeInputError(f"linked node {nid!r} does not exist"), {})
            table = self.table(node["class_type"])
            blocking = self.blocking[nid]
            for name, v in (node.get("inputs") or {}).items():
                if not is_link(v):
                    continue
                info = table.get(name)
                if info is not None and (info.lazy or info.raw_link):
                    continue
                src = v[0]
                if self.has_value(src):
                    continue
                if src not in self.pending:
                    self._register(src)
                    stack.append(src)
                blocking.add(src)
                self.consumers.setdefault(src, set()).add(nid)
            if not blocking:
                self._make_ready(nid)

    def _register(self, nid: str) -> None:
        self.counter += 1
        self.pending[nid] = self.counter
        self.blocking[nid] = set()

    def add_dep(self, nid: str, src: str) -> None:
        if self.has_value(src):
            return
        self.add(src)
        self.blocking[nid].add(src)
        self.consumers.setdefault(src, set()).add(nid)

    def _make_ready(self, nid: str) -> None:
        if nid in self.in_ready:
            return
        self.in_ready.add(nid)
        heapq.heappush(self.ready[self._bucket(nid)], (self.pending[nid], nid))

    def _is_output(self, nid: str) -> bool:
        node = self.prompt.get(nid) or self.dyn.ephemeral.get(nid)
        class_type = node["class_type"] if node else None
        flag = self.output_flags.get(class_type)
        if flag is None:
            spec = self.registry.get(class_type)
            fn = (getattr(spec.v1_class, spec.v1_class.FUNCTION, None) if spec and spec.v1_class is not None
                  else spec.function if spec else None)
            flag = self.output_flags[class_type] = bool(spec and (spec.output_node or inspect.iscoroutinefunction(fn)))
        return flag

    def _bucket(self, nid: str) -> int:
        if self._is_output(nid):
            return 0
        first = self.consumers.get(nid, ())
        if any(self._is_output(c) for c in first):
            return 1
        if any(self._is_output(cc) for c in first for cc in self.consumers.get(c, ())):
            return 2
        return 3

    def pick(self) -> str | None:
        for heap in self.ready:
            while heap:
                _, nid = heapq.heappop(heap)
                self.in_ready.discard(nid)
                if nid in self.pending and not self.blocking.get(nid):
                    return nid
        return None

    def complete(self, nid: str) -> None:
        self.pending.pop(nid, None)
        self.blocking.pop(nid, None)
        for c in self.consumers.pop(nid, ()):
            blockers = self.blocking.get(c)
            if blockers is not None:
                blockers.discard(nid)
                if not blockers:
                    self._make_ready(c)

    def _requeue(self, nid: str) -> None:
        if not self.blocking[nid]:
            self._make_ready(nid)

    # -- one node ----------------------------------------------------------------------------------
    def run_node(self, nid: str) -> bool:
        """Run (or resume) a node; True when it finished, False when it waits for more inputs."""
        node = self._node_or_none(nid)
        class_type = node["class_type"]
        st = self.state.setdefault(nid, _NodeState())
        try:
            spec = self._spec(class_type)
            if st.expansion is not None:
                return self._finish_expansion(nid, spec, st)
            if st.tasks is not None:
                return self._finish_async(nid, spec, st)
            table = self.table(class_type)
            data, missing = self._gather(nid, node, table)
        except (_Failure, Interrupted):
            raise
        except Exception as exc:
            raise _Failure(nid, exc, {})
        has_blocker = any(type(v) is ExecutionBlocker for vs in data.values() for v in vs)
        if not (has_blocker and _all_calls_blocked(data, spec.input_is_list)):
            self._progress_state(nid, 0.0, 1.0, "running")
            self.emit("executing", {"node": nid, "display_node": self.dyn.display_id(nid), "prompt_id": self.prompt_id})
        ctx = ctxmod.RunContext(nid, self.prompt_id, self.ex.paths, self.ex.config, self.interrupt,
                                self._on_progress, self._on_warn, self.dyn.display_id(nid))
        token = ctxmod.set_current(ctx)
        try:
            instance = self._instance(nid, spec)
            lazy_fn = self._lazy_fn(spec, instance)
            if lazy_fn is not None and missing:
                requested = set()
                for r in _map_calls(lambda **kw: _call(lazy_fn, kw), self._with_ctx(spec, data, ctx, lazy=True),
                                    spec.input_is_list, ctx):
                    if isinstance(r, (list, tuple)):
                        requested.update(r)
                new = False
                for name in requested:
                    value = (node.get("inputs") or {}).get(name)
                    if name not in table and not is_link(value):
                        raise NodeInputError(f"check_lazy_status requested {name!r}, which is not an input of "
                                             f"{class_type}")
                    if name in missing and is_link(value):
                        self.add_dep(nid, value[0])
                        new = True
                if new:
                    self._requeue(nid)
                    return False
            results = _map_calls(lambda **kw: self._invoke(spec, instance, kw), self._with_ctx(spec, data, ctx),
                                 spec.input_is_list, ctx)
            if any(asyncio.iscoroutine(r) for r in results):
                results = self._start_tasks(results)
                if any(isinstance(r, asyncio.Task) for r in results):
                    st.tasks, st.data = results, data
                    return False
            outs, uis, expands = self._normalize(spec, results)
        except Interrupted as exc:
            raise _Failure(nid, exc, data)
        except _Failure:
            raise
        except Exception as exc:
            raise _Failure(nid, exc, data)
        finally:
            ctxmod.reset_current(token)
        if has_blocker:
            self._report_blockers(nid, class_type, data, spec.input_is_list)
        return self._complete_results(nid, class_type, spec, st, outs, uis, expands)

    def _complete_results(self, nid, class_type, spec, st, outs, uis, expands) -> bool:
        if any(e is not None for e in expands):
            self._expand(nid, class_type, outs, expands)
            st.expansion, st.ui = outs, uis
            if self.blocking[nid]:
                return False
            return self._finish_expansion(nid, spec, st)
        self._store(nid, spec, _merge_outputs(spec, outs), _merge_ui(uis))
        return True

    # -- async nodes (§3.4) -----------------------------------------------------------------------------
    def _loop(self) -> asyncio.AbstractEventLoop:
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        return self.loop

    def _start_tasks(self, results: list) -> list:
        """Start coroutines as tasks and let them run until they first block; finished ones become values."""
        loop = self._loop()
        tasks = [loop.create_task(r) if asyncio.iscoroutine(r) else r for r in results]
        loop.run_until_complete(asyncio.sleep(0))
        return [t.result() if isinstance(t, asyncio.Task) and t.done() else t for t in tasks]

    def _finish_async(self, nid: str, spec, st: _NodeState) -> bool:
        """Collect a node's finished tasks (picked again without a second `executing`)."""
        data, st.data = st.data, None
        try:
            results = [t.result() if isinstance(t, asyncio.Task) else t for t in st.tasks]
            st.tasks = None
            outs, uis, expands = self._normalize(spec, results)
        except Exception as exc:
            raise _Failure(nid, exc, data)
        return self._complete_results(nid, spec.class_type, spec, st, outs, uis, expands)

    def _waiting(self) -> list[str]:
        return [nid for nid, st in self.state.items() if st.tasks is not None and nid in self.pending]

    def _wait_for_tasks(self, waiting: list[str]) -> None:
        """Run the loop until some node's tasks are all done (checking the interrupt flag meanwhile)."""
        loop = self._loop()
        while True:
            for nid in waiting:
                if all(t.done() for t in self.state[nid].tasks if isinstance(t, asyncio.Task)):
                    self.in_ready.discard(nid)
                    self._make_ready(nid)
                    return
            if self.interrupt.is_set():
                self.interrupt.clear()
                raise _Failure(waiting[0], Interrupted("Processing interrupted"), self.state[waiting[0]].data)
            pending = [t for nid in waiting for t in self.state[nid].tasks if isinstance(t, asyncio.Task)
                       and not t.done()]
            loop.run_until_complete(asyncio.wait(pending, timeout=0.05, return_when=asyncio.FIRST_COMPLETED))

    def _close_loop(self) -> None:
        """Cancel tasks still running when the prompt stops, then close the loop."""
        if self.loop is None:
            return
        leftover = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for t in leftover:
            t.cancel()
        if leftover:
            self.loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
        self.loop.close()
        self.loop = None

    def _with_ctx(self, spec, data: dict, ctx, lazy: bool = False) -> dict:
        if spec.v1_class is not None:
            return data
        if not spec.accepts_extra:
            allowed = self.allowed.get(spec.class_type)
            if allowed is None:
                allowed = self.allowed[spec.class_type] = frozenset(name for name, _ in spec.inputs)
            if not allowed.issuperset(data):
                data = {k: v for k, v in data.items() if k in allowed}
        if spec.wants_ctx and not lazy:
            data = dict(data, ctx=[ctx])
        return data

    def _instance(self, nid: str, spec) -> Any:
        if spec.v1_class is None:
            return None
        key = (nid, spec.class_type)
        inst = self.ex.objects.get(key)
        if inst is None:
            inst = spec.v1_class()
            if self.cache.kind != "none":
                self.ex.objects[key] = inst
        return inst

    @staticmethod
    def _lazy_fn(spec, instance) -> Callable | None:
        if spec.v1_class is not None:
            return getattr(instance, "check_lazy_status", None)
        return spec.check_lazy_status

    def _invoke(self, spec, instance, kwargs: dict) -> Any:
        fn = getattr(instance, spec.v1_class.FUNCTION) if spec.v1_class is not None else spec.function
        return fn(**kwargs)

    def _gather(self, nid: str, node: dict, table: dict[str, InputInfo]) -> tuple[dict, set]:
        """Input lists per §4.1 and the set of linked inputs whose values are not available."""
        data: dict[str, list] = {}
        missing: set[str] = set()
        inputs = node.get("inputs") or {}
        for name, v in inputs.items():
            info = table.get(name)
            if is_link(v):
                if info is not None and info.raw_link:
                    data[name] = [v]
                    continue
                src, slot = v
                if self.has_value(src):
                    outs = self.values[src]
                    if slot < len(outs):
                        data[name] = outs[slot]
                        continue
                data[name] = [None]
                missing.add(name)
            elif info is not None and info.category != "hidden":
                data[name] = [v]
        for info in table.values():
            if info.category != "hidden":
                continue
            kind = info.type
            if kind == "PROMPT":
                data[info.name] = [self.prompt]
            elif kind == "DYNPROMPT":
                data[info.name] = [self.dyn]
            elif kind == "EXTRA_PNGINFO":
                data[info.name] = [self.extra_data.get("extra_pnginfo")]
            elif kind == "UNIQUE_ID":
                data[info.name] = [nid]
            elif kind == "AUTH_TOKEN_COMFY_ORG":
                data[info.name] = [self.extra_data.get("auth_token_comfy_org")]
            elif kind == "API_KEY_COMFY_ORG":
                data[info.name] = [self.extra_data.get("api_key_comfy_org")]
        return data, missing

    def _normalize(self, spec, results: list) -> tuple[list, list, list]:
        """Per call: (outputs tuple | blocker | None, ui | None, expand | None)."""
        outs, uis, expands = [], [], []
        n_out = len(spec.outputs)
        for r in results:
            ui = expand = None
            if isinstance(r, ExecutionBlocker):
                out = r
            elif spec.v1_class is None:
                if isinstance(r, NodeOutput):
                    out, ui, expand = r.result, r.ui, r.expand
                elif r is None:
                    out = ()
                elif n_out == 1 and not (isinstance(r, tuple) and len(r) == 1):
                    out = (r,)
                else:
                    out = r
            elif isinstance(r, dict):
                out, ui, expand = r.get("result"), r.get("ui"), r.get("expand")
            elif r is None:
                if n_out:
                    raise TypeError(f"{spec.class_type} returned None but declares {n_out} output(s)")
                out = ()
            else:
                out = r
            if out is not None and not isinstance(out, (ExecutionBlocker, tuple, list)):
                raise TypeError(f"{spec.class_type} returned {type(out).__name__}, expected a tuple")
            outs.append(out)
            uis.append(ui)
            expands.append(expand)
        return outs, uis, expands

    def _report_blockers(self, nid: str, class_type: str, data: dict, input_is_list: bool) -> None:
        for values in data.values():
            for v in values:
                if isinstance(v, ExecutionBlocker) and v.message and id(v) not in self.reported_blockers:
                    self.reported_blockers.add(id(v))
                    self.emit("execution_error", {
                        "prompt_id": self.prompt_id, "node_id": nid, "node_type": class_type,
                        "executed": list(self.result.executed), "exception_message": f"Execution Blocked: {v.message}",
                        "exception_type": "ExecutionBlocked", "traceback": [], "current_inputs": [],
                        "current_outputs": []})

    def _expand(self, nid: str, class_type: str, outs: list, expands: list) -> None:
        new_ids: list[str] = []
        for graph in expands:
            if not graph:
                continue
            for new_id, new_node in graph.items():
                display = new_node.get("override_display_id") or self.dyn.display_id(nid)
                self.dyn.add_ephemeral(new_id, new_node, nid, display)
                new_ids.append(new_id)
        compute_keys(self._node_or_none, new_ids, class_info=self._class_info, fingerprints={},
                     memo=self.keys, interner=self.cache.interner, tag=f"sub:{nid}:{class_type}")
        for new_id in new_ids:
            spec = self.registry.get(self.dyn.ephemeral[new_id].get("class_type"))
            if spec is not None and spec.output_node:
                self.add(new_id)
        for out in outs:
            if isinstance(out, (tuple, list)):
                for v in out:
                    if is_link(v):
                        self.add_dep(nid, v[0])

    def _finish_expansion(self, nid: str, spec, st: _NodeState) -> bool:
        resolved = []
        for out in st.expansion:
            if isinstance(out, (tuple, list)):
                resolved.append([_LinkValue(self.values[v[0]][v[1]]) if is_link(v) else v for v in out])
            else:
                resolved.append(out)
        self._store(nid, spec, _merge_outputs(spec, resolved), _merge_ui(st.ui or []))
        st.expansion = None
        return True

    def _store(self, nid: str, spec, outputs: list[list], ui: dict | None) -> None:
        self.values[nid] = outputs
        parent = self.dyn.parent_id(nid)
        parent_tag = (parent, self.dyn.get_node(parent)["class_type"]) if parent else None
        self.cache.set(self.keys.get(nid), CacheEntry(ui, outputs, parent=parent_tag))
        self.result.executed.append(nid)
        if ui:
            self._record_ui(nid, ui)
            self.emit("executed", {"node": nid, "display_node": self.dyn.display_id(nid), "output": ui,
                                   "prompt_id": self.prompt_id})
        self._progress_state(nid, 1.0, 1.0, "finished")

    # -- progress / warnings from the node context -------------------------------------------------------
    def _on_progress(self, nid: str, value, total, preview) -> None:
        self.emit("progress", {"value": value, "max": total, "prompt_id": self.prompt_id, "node": nid})
        self._progress_state(nid, value, total, "running")
        if preview is not None:
            fmt, image, max_size = (tuple(preview) + (None,))[:3]
            self.emit("preview", {"prompt_id": self.prompt_id, "node_id": nid,
                                  "display_node_id": self.dyn.display_id(nid), "image": image, "format": fmt,
                                  "max_size": max_size})

    def _on_warn(self, nid: str, text: str) -> None:
        log.warning("node %s: %s", nid, text)
        self.result.warnings.append(f"node {nid}: {text}")

    # -- failure -------------------------------------------------------------------------------------
    def _fail(self, failure: _Failure) -> RunResult:
        exc = failure.exc
        nid = failure.node_id
        node = self._node_or_none(nid) or {}
        real = self.dyn.real_id(nid) if nid else nid
        if isinstance(exc, Interrupted):
            data = {"prompt_id": self.prompt_id, "node_id": real, "node_type": node.get("class_type"),
                    "executed": list(self.result.executed), "timestamp": _now()}
            return self._finish_error("execution_interrupted", data, "interrupted")
        tips = ""
        if _is_out_of_memory(exc):
            tips = OOM_TIPS
            self.out_of_memory = True
        data = {"prompt_id": self.prompt_id, "node_id": real, "node_type": node.get("class_type"),
                "executed": list(self.result.executed), "exception_message": f"{exc}\n{tips}",
                "exception_type": exception_type_name(exc), "traceback": traceback.format_tb(exc.__traceback__),
                "current_inputs": _format_inputs(failure.inputs), "current_outputs": list(self.prompt),
                "timestamp": _now()}
        return self._finish_error("execution_error", data, "error")

    def _finish_error(self, event: str, data: dict, status: str) -> RunResult:
        self.result.status = status
        self.result.error = data
        self.result.messages.append([event, data])
        self.emit(event, dict(data))
        return self.result


OOM_TIPS = ("This error means you ran out of memory on your GPU.\n\nTIPS: If the workflow worked before you "
            "might have accidentally set the batch_size to a large number.\n")


def _is_out_of_memory(exc: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError (and MemoryError), recognised without importing torch."""
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"


class _LinkValue:
    """A resolved expansion link: the whole output list of the linked slot (spliced on merge)."""

    __slots__ = ("values",)

    def __init__(self, values: list):
        self.values = values


def _parameter_names(fn: Callable) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def _call(fn: Callable, kwargs: dict) -> Any:
    result = fn(**kwargs)
    if asyncio.iscoroutine(result) or (result is not None and hasattr(result, "__await__")):
        result = asyncio.run(_await(result))
    return result


async def _await(awaitable):
    return await awaitable


def _all_calls_blocked(data: dict, input_is_list: bool) -> bool:
    """True when every call of the node would receive an ExecutionBlocker (no `executing` then)."""
    if input_is_list:
        return True
    n = max(len(v) for v in data.values())
    return n > 0 and all(any(isinstance(vs[min(i, len(vs) - 1)], ExecutionBlocker) for vs in data.values() if vs)
                         for i in range(n))


def _map_calls(fn: Callable, data: dict, input_is_list: bool, ctx) -> list:
    """Call `fn` once per list element (§5.1), broadcasting shorter lists; blocked calls return the blocker."""
    if input_is_list:
        if ctx is not None:
            ctx.check_interrupt()
        return [fn(**data)]
    n = max((len(v) for v in data.values()), default=1) if data else 1
    if n == 1 and all(len(v) == 1 for v in data.values()):   # the common case: one call, no broadcasting
        args = {k: v[0] for k, v in data.items()}
        blocker = next((a for a in args.values() if type(a) is ExecutionBlocker), None)
        if blocker is not None:
            return [blocker]
        if ctx is not None:
            ctx.check_interrupt()
        return [fn(**args)]
    results = []
    for i in range(n):
        args = {k: (v[i] if i < len(v) else v[-1]) if v else None for k, v in data.items()}
        blocker = next((a for a in args.values() if isinstance(a, ExecutionBlocker)), None)
        if blocker is not None:
            results.append(blocker)
            continue
        if ctx is not None:
            ctx.check_interrupt()
            ctx.begin_call(i)
        results.append(fn(**args))
    return results


def _merge_outputs(spec, outs: list) -> list[list]:
    """Slot lists from per-call results (§5.2): append per call, or concatenate list outputs."""
    if len(outs) == 1 and type(outs[0]) is tuple and len(outs[0]) == len(spec.outputs) \
            and not any(o.is_list for o in spec.outputs) and not any(type(v) is _LinkValue for v in outs[0]):
        return [[v] for v in outs[0]]
    merged: list[list] = [[] for _ in spec.outputs]
    for out in outs:
        if out is None:
            continue
        for k in range(len(spec.outputs)):
            v = out if isinstance(out, ExecutionBlocker) else (out[k] if k < len(out) else None)
            if isinstance(v, _LinkValue):
                merged[k].extend(v.values)
            elif spec.outputs[k].is_list and not isinstance(v, ExecutionBlocker):
                merged[k].extend(v)
            else:
                merged[k].append(v)
    return merged


def _merge_ui(uis: list) -> dict | None:
    """Concatenate per-call UI lists; the key set comes from the first call's dict (§5.5)."""
    first = next((u for u in uis if u), None)
    if first is None:
        return None
    merged = {k: [] for k in first}
    for ui in uis:
        if not ui:
            continue
        for k in merged:
            if k in ui:
                merged[k].extend(ui[k])
    return merged


def _format_inputs(data: Any) -> dict:
    if not isinstance(data, dict):
        return {}
    return {k: [v if v is None or isinstance(v, (int, float, bool, str)) else str(v) for v in vs]
            for k, vs in data.items() if k != "ctx"}
