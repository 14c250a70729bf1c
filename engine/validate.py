"""Prompt validation with every error type of execution.md §2, in the wire shapes of api.md §1.3."""
from __future__ import annotations

import asyncio
import inspect
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from engine import context as ctxmod
from engine.graph import ExecutionBlocker, find_cycles, is_link
from engine.registry import InputInfo, Registry, input_table

_CONVERTERS: dict[str, Callable[[Any], Any]] = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}


@dataclass
class ValidationResult:
    """ok: at least one output is valid; error/node_errors: the api.md §1.3 body parts."""

    ok: bool
    error: dict | None
    node_errors: dict = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)

    def body(self) -> dict:
        """The 400 reply body `{"error", "node_errors"}`."""
        return {"error": self.error, "node_errors": self.node_errors}


def _err(type_: str, message: str, details: str = "", extra: dict | None = None) -> dict:
    return {"type": type_, "message": message, "details": details, "extra_info": extra or {}}


def _fail(type_: str, message: str, details: str = "") -> ValidationResult:
    return ValidationResult(False, _err(type_, message, details), {}, [])


def exception_type_name(exc: BaseException) -> str:
    """`module.QualName`, or the bare name for builtins (api.md §11.5)."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def types_compatible(received: Any, expected: Any) -> bool:
    """Link type compatibility (execution.md §2.3), honouring `__ne__` overrides (AnyType)."""
    if not (received != expected):
        return True
    if received == "*" or expected == "*":
        return True
    if received == "COMFY_MATCHTYPE_V3" or expected == "COMFY_MATCHTYPE_V3":
        return True
    if isinstance(received, (list, tuple)) and expected == "COMBO":
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    r = {t.strip() for t in received.split(",")}
    e = {t.strip() for t in expected.split(",")}
    if "*" in r or "*" in e:
        return True
    return bool(r & e)


def _signature_info(fn: Callable | None) -> tuple[list[str], bool]:
    """(parameter names, takes **kwargs) of a VALIDATE_INPUTS function."""
    if fn is None:
        return [], False
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return [], True
    names = [p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "cls"]
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def call_maybe_async(fn: Callable, kwargs: dict) -> Any:
    result = fn(**kwargs)
    if inspect.isawaitable(result):
        result = asyncio.run(_await(result))
    return result


async def _await(awaitable):
    return await awaitable


class _Validator:
    def __init__(self, registry: Registry, prompt: dict):
        self.registry = registry
        self.prompt = prompt
        self.tables: dict[str, dict[str, InputInfo]] = {}
        self.valid: dict[str, bool] = {}
        self.errors: dict[str, list[dict]] = {}
        self.raised: dict[str, BaseException] = {}
        self.order: list[str] = []   # validation visit order (upstream first)

    def table(self, class_type: str) -> dict[str, InputInfo]:
        t = self.tables.get(class_type)
        if t is None:
            t = self.tables[class_type] = input_table(self.registry.specs[class_type].input_types(self.registry.paths))
        return t

    def visit_order(self, root: str, cycles: dict[str, list[str]]) -> list[str]:
        """Post-order of the not-yet-validated nodes reachable from `root` (never entering cycles)."""
        out: list[str] = []
        seen = set(self.valid)
        stack = [(root, False)]
        while stack:
            nid, expanded = stack.pop()
            if expanded:
                out.append(nid)
                continue
            if nid in seen:
                continue
            seen.add(nid)
            stack.append((nid, True))
            if nid in cycles:
                continue
            inputs = self.prompt[nid].get("inputs") or {}
            for v in reversed(list(inputs.values()) if isinstance(inputs, dict) else []):
                if is_link(v) and v[0] in self.prompt and v[0] not in seen:
                    stack.append((v[0], False))
        return out

    def validate_node(self, nid: str) -> None:
        node = self.prompt[nid]
        class_type = node["class_type"]
        spec = self.registry.specs[class_type]
        inputs = node.get("inputs")
        if not isinstance(inputs, dict):
            inputs = node["inputs"] = {}
        table = self.table(class_type)
        vi = spec.validate_inputs
        vi_names, vi_kwargs = _signature_info(vi)
        errors: list[dict] = []
        upstream_ok = True
        linked_types: dict[str, Any] = {}
        for info in table.values():
            if info.category == "hidden":
                continue
            name = info.name
            if name not in inputs:
                if info.category == "required":
                    errors.append(_err("required_input_missing", "Required input is missing", name,
                                       {"input_name": name}))
                continue
            value = inputs[name]
            if isinstance(value, list):
                if not is_link(value) or value[1] < 0:
                    errors.append(_err("bad_linked_input",
                                       "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                                       name, {"input_name": name, "input_config": info.config,
                                              "received_value": value}))
                    continue
                src, slot = value
                if src not in self.prompt:
                    errors.append(_err("exception_during_validation", "Exception when validating node",
                                       f"{name}: linked node '{src}' does not exist",
                                       {"input_name": name, "linked_node": value, "exception_type": "",
                                        "traceback": []}))
                    continue
                src_spec = self.registry.specs[self.prompt[src]["class_type"]]
                if slot >= len(src_spec.outputs):
                    errors.append(_err("exception_during_validation", "Exception when validating node",
                                       f"{name}: node '{src}' ({src_spec.class_type}) has no output slot {slot}",
                                       {"input_name": name, "linked_node": value, "exception_type": "",
                                        "traceback": []}))
                    continue
                received = src_spec.outputs[slot].type
                linked_types[name] = received
                if "input_types" not in vi_names and not types_compatible(received, info.type):
                    errors.append(_err("return_type_mismatch", "Return type mismatch between linked nodes",
                                       f"{name}, received_type({received}) mismatch input_type({info.type})",
                                       {"input_name": name, "input_config": info.config, "received_type": received,
                                        "linked_node": value}))
                    continue
                if not self.valid.get(src, False):
                    upstream_ok = False
                    exc = self.raised.get(src)
                    if exc is not None:
                        self.errors.setdefault(src, []).append(_err(
                            "exception_during_inner_validation", "Exception when validating inner node", str(exc),
                            {"input_name": name, "input_config": info.config, "exception_message": str(exc),
                             "exception_type": exception_type_name(exc),
                             "traceback": traceback.format_exception(exc), "linked_node": value}))
                continue
            if isinstance(value, dict) and "__value__" in value:
                value = inputs[name] = value["__value__"]
            conv = _CONVERTERS.get(info.type) if isinstance(info.type, str) else None
            if conv is not None:
                try:
                    value = inputs[name] = conv(value)
                except Exception as exc:
                    errors.append(_err("invalid_input_type", f"Failed to convert an input value to a {info.type} value",
                                       f"{name}, {value}, {exc}",
                                       {"input_name": name, "input_config": info.config, "received_value": value,
                                        "exception_message": str(exc)}))
                    continue
            if name in vi_names or vi_kwargs:
                continue
            err = self._range_or_list_error(info, value)
            if err is not None:
                errors.append(err)
        if vi is not None:
            errors.extend(self._custom_validation(nid, vi, vi_names, vi_kwargs, table, inputs, linked_types))
        if errors:
            self.errors.setdefault(nid, []).extend(errors)
        self.valid[nid] = upstream_ok and not errors

    @staticmethod
    def _range_or_list_error(info: InputInfo, value: Any) -> dict | None:
        name, opts = info.name, info.options
        extra = {"input_name": name, "input_config": info.config, "received_value": value}
        try:
            if "min" in opts and value < opts["min"]:
                return _err("value_smaller_than_min", f"Value {value} smaller than min of {opts['min']}", name, extra)
            if "max" in opts and value > opts["max"]:
                return _err("value_bigger_than_max", f"Value {value} bigger than max of {opts['max']}", name, extra)
        except TypeError:
            pass
        if isinstance(info.type, list):
            options = info.type
        elif info.type == "COMBO" and "options" in opts:
            options = list(opts["options"])
        else:
            return None
        if value in options:
            return None
        if len(options) > 20:
            listing, extra["input_config"] = f"(list of length {len(options)})", None
        else:
            listing = repr(list(options))
        return _err("value_not_in_list", "Value not in list", f"{name}: '{value}' not in {listing}", extra)

    def _custom_validation(self, nid, vi, vi_names, vi_kwargs, table, inputs, linked_types) -> list[dict]:
        kwargs: dict[str, Any] = {}
        for info in table.values():
            if not (vi_kwargs or info.name in vi_names):
                continue
            if info.category == "hidden":
                hidden = {"UNIQUE_ID": nid, "PROMPT": {}, "EXTRA_PNGINFO": None}
                if info.type in hidden:
                    kwargs[info.name] = hidden[info.type]
            elif info.name in inputs:
                kwargs[info.name] = None if is_link(inputs[info.name]) else inputs[info.name]
        if vi_kwargs:  # undeclared inputs present in the prompt too
            for k, v in inputs.items():
                kwargs.setdefault(k, None if is_link(v) else v)
        if "input_types" in vi_names:
            kwargs["input_types"] = dict(linked_types)
        if "ctx" in vi_names:  # native nodes that check files through the node context
            kwargs["ctx"] = ctxmod.static_context(nid, self.registry.paths, self.registry.config)
        result = call_maybe_async(vi, kwargs)
        if result is True or isinstance(result, ExecutionBlocker):
            return []
        return [_err("custom_validation_failed", "Custom validation failed for node",
                     name if result is False else f"{name} - {result}", {"input_name": name})
                for name in kwargs if name != "ctx"]


def validate_prompt(registry: Registry, prompt: Any, partial_targets: list[str] | None = None) -> ValidationResult:
    """Validate an API prompt (mutating constants as §2.4 says); all errors at once."""
    if not isinstance(prompt, dict) or not all(isinstance(n, dict) for n in prompt.values()):
        details = "the prompt is not a JSON object" if not isinstance(prompt, dict) else \
            "every node must be a JSON object"
        if isinstance(prompt, dict) and "nodes" in prompt and "links" in prompt:
            details = "This is an editor (UI) workflow; convert it to API format first"
        return _fail("invalid_prompt", "Prompt must be an object mapping node ids to nodes", details)
    for nid, node in prompt.items():
        if "class_type" not in node:
            return _fail("invalid_prompt", "Cannot execute because a node is missing the class_type property.",
                         f"Node ID '#{nid}'")
        if node["class_type"] not in registry:
            return _fail("invalid_prompt", f"Cannot execute because node {node['class_type']} does not exist.",
                         f"Node ID '#{nid}'")
    outputs = [nid for nid, node in prompt.items() if registry.specs[node["class_type"]].output_node is True]
    if partial_targets is not None:
        targets = {str(t) for t in partial_targets}
        outputs = [o for o in outputs if o in targets]
    if not outputs:
        return _fail("prompt_no_outputs", "Prompt has no outputs", "")

    v = _Validator(registry, prompt)
    cycles = find_cycles(prompt, outputs)
    for nid, cycle in cycles.items():
        v.errors[nid] = [_err("dependency_cycle", "Dependency cycle detected", " -> ".join(cycle),
                              {"cycle": list(cycle)})]
        v.valid[nid] = False
    good: list[str] = []
    node_errors: dict[str, dict] = {}
    reached: dict[str, set[str]] = {}
    for out in outputs:
        for nid in v.visit_order(out, cycles):
            v.order.append(nid)
            try:
                v.validate_node(nid)
            except Exception as exc:  # a crashing VALIDATE_INPUTS / INPUT_TYPES
                v.valid[nid] = False
                v.raised[nid] = exc
        if v.valid.get(out):
            good.append(out)
            continue
        if out in v.raised and out not in v.errors:
            exc = v.raised[out]
            v.errors[out] = [_err("exception_during_validation", "Exception when validating node", str(exc),
                                  {"exception_type": exception_type_name(exc),
                                   "traceback": traceback.format_exception(exc)})]
        reach = _reachable(prompt, out, reached)
        for nid in v.order + [c for c in cycles if c not in v.order]:
            if nid in reach and v.errors.get(nid) and not v.valid.get(nid):
                entry = node_errors.setdefault(nid, {"errors": v.errors[nid], "dependent_outputs": [],
                                                     "class_type": prompt[nid]["class_type"]})
                if out not in entry["dependent_outputs"]:
                    entry["dependent_outputs"].append(out)
    if good:
        return ValidationResult(True, None, node_errors, good)
    own = [e for o in outputs for e in v.errors.get(o, [])]
    details = "\n".join(f"{e['message']}: {e['details']}" for e in own)
    return ValidationResult(False, _err("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                                        details), node_errors, [])


def _reachable(prompt: dict, root: str, memo: dict[str, set[str]]) -> set[str]:
    """Every node id reachable upstream from `root` through links (root included)."""
    seen = {root}
    stack = [root]
    while stack:
        inputs = prompt[stack.pop()].get("inputs") or {}
        for val in (inputs.values() if isinstance(inputs, dict) else ()):
            if is_link(val) and val[0] in prompt and val[0] not in seen:
                seen.add(val[0])
                stack.append(val[0])
    memo[root] = seen
    return seen
