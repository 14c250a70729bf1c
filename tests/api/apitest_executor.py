"""Stand-in for engine.executor.Executor (contracts.md §2) until the real one lands."""

import time
import traceback
from dataclasses import dataclass, field

from engine.context import RunContext
from engine.errors import Interrupted
from engine.schema import NodeOutput


def _ms() -> int:
    return int(time.time() * 1000)


@dataclass
class RunResult:
    status: str
    messages: list = field(default_factory=list)
    outputs: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


class FakeExecutor:
    """Runs the test nodes depth-first from the outputs, emitting execution.md §9.1's sequence."""

    def __init__(self, registry, paths=None, config=None):
        self.registry, self.paths, self.config = registry, paths, config

    def free(self, unload_models: bool, free_memory: bool) -> None:
        pass

    def run(self, prompt_id, prompt, *, extra_data, outputs, emit, interrupt):
        messages, ui_out, meta, values, executed, states = [], {}, {}, {}, [], {}

        def record(event, data):
            messages.append([event, data])
            emit(event, data)

        def state(nid, value, status):
            states[nid] = {"value": value, "max": 1.0, "state": status, "node_id": nid, "prompt_id": prompt_id,
                           "display_node_id": nid, "parent_node_id": None, "real_node_id": nid}
            emit("progress_state", {"prompt_id": prompt_id, "nodes": dict(states)})

        def run_node(nid):
            if nid in values:
                return values[nid]
            node = prompt[nid]
            spec = self.registry.get(node["class_type"])
            kwargs = {k: (run_node(v[0])[v[1]] if isinstance(v, list) else v) for k, v in node["inputs"].items()}
            if interrupt.is_set():
                interrupt.clear()
                raise Interrupted()
            state(nid, 0.0, "running")
            emit("executing", {"node": nid, "display_node": nid, "prompt_id": prompt_id})
            if spec.wants_ctx:
                kwargs["ctx"] = RunContext(nid, prompt_id, self.paths, self.config, interrupt,
                                           lambda n, v, m, p: emit("progress", {"value": v, "max": m,
                                                                                "prompt_id": prompt_id, "node": n}),
                                           lambda n, t: None)
            try:
                out = spec.function(**kwargs)
            except Interrupted:
                raise
            except Exception as exc:
                raise _NodeFailed(nid, node["class_type"], exc, kwargs) from exc
            executed.append(nid)
            if isinstance(out, NodeOutput):
                ui_out[nid] = out.ui
                meta[nid] = {"node_id": nid, "display_node": nid, "parent_node": None, "real_node_id": nid}
                emit("executed", {"node": nid, "display_node": nid, "output": out.ui, "prompt_id": prompt_id})
                out = out.result or ()
            elif not isinstance(out, tuple):
                out = (out,)
            state(nid, 1.0, "finished")
            values[nid] = out
            return out

        record("execution_start", {"prompt_id": prompt_id, "timestamp": _ms()})
        record("execution_cached", {"nodes": [], "prompt_id": prompt_id, "timestamp": _ms()})
        try:
            for nid in outputs:
                run_node(nid)
        except Interrupted:
            current = next((n for n, s in states.items() if s["state"] == "running"), None)
            record("execution_interrupted", {"prompt_id": prompt_id, "node_id": current,
                                             "node_type": prompt[current]["class_type"] if current else None,
                                             "executed": executed, "timestamp": _ms()})
            return RunResult("interrupted", messages, ui_out, meta)
        except _NodeFailed as failed:
            record("execution_error", {"prompt_id": prompt_id, "node_id": failed.node_id, "node_type": failed.class_type,
                                       "executed": executed, "exception_message": f"{failed.exc}\n",
                                       "exception_type": type(failed.exc).__name__,
                                       "traceback": traceback.format_tb(failed.exc.__traceback__),
                                       "current_inputs": {k: [str(v)] for k, v in failed.inputs.items()},
                                       "current_outputs": list(prompt), "timestamp": _ms()})
            return RunResult("error", messages, ui_out, meta)
        record("execution_success", {"prompt_id": prompt_id, "timestamp": _ms()})
        return RunResult("success", messages, ui_out, meta)


class _NodeFailed(Exception):
    def __init__(self, node_id, class_type, exc, inputs):
        super().__init__(str(exc))
        self.node_id, self.class_type, self.exc, self.inputs = node_id, class_type, exc, inputs
