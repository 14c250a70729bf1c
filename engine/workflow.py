"""Workflow files: API-format prompts as they are, editor (UI) workflows converted (workflows.md §3)."""
from __future__ import annotations

import datetime
import random
import re
from typing import Any, Callable

from engine.errors import WorkflowError

VIRTUAL_TYPES = {"Reroute", "PrimitiveNode", "Note", "MarkdownNote"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")
MUTED, BYPASS = 2, 4


def is_editor_workflow(data: Any) -> bool:
    """Editor workflows have top-level `nodes` and `links` arrays; API prompts map ids to nodes."""
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


def load_prompt(data: Any, object_info: dict, warn: Callable[[str], None] | None = None) -> dict:
    """An API prompt from either format (editor workflows are converted)."""
    if is_editor_workflow(data):
        return editor_to_api(data, object_info, warn=warn)
    if not isinstance(data, dict):
        raise WorkflowError("A workflow must be a JSON object")
    return data


def _norm_links(links: Any) -> dict[int, dict]:
    """Both link encodings (0.4 arrays, v1 objects) → {id: {origin_id, origin_slot, target_id, target_slot, type}}."""
    out: dict[int, dict] = {}
    for link in links or []:
        if isinstance(link, list) and len(link) >= 6:
            lid, oid, oslot, tid, tslot, typ = link[:6]
            out[lid] = {"id": lid, "origin_id": oid, "origin_slot": oslot, "target_id": tid,
                        "target_slot": tslot, "type": typ}
        elif isinstance(link, dict) and "id" in link:
            out[link["id"]] = link
    return out


def _compatible(a: Any, b: Any) -> bool:
    if a == b or a == "*" or b == "*":
        return True
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    return bool({t.strip() for t in a.split(",")} & {t.strip() for t in b.split(",")})


class _Scope:
    """One graph level: the top workflow, or a subgraph definition instantiated by an instance node."""

    def __init__(self, graph: dict, prefix: str, instance: dict | None, parent: "_Scope | None"):
        self.nodes = {n["id"]: n for n in graph.get("nodes") or [] if isinstance(n, dict) and "id" in n}
        self.links = _norm_links(graph.get("links"))
        self.graph = graph
        self.prefix = prefix
        self.instance = instance
        self.parent = parent

    def full_id(self, node_id: Any) -> str:
        return f"{self.prefix}{node_id}"


class _Converter:
    def __init__(self, workflow: dict, object_info: dict, warn):
        self.info = object_info
        self.warn = warn or (lambda text: None)
        self.defs = {d["id"]: d for d in ((workflow.get("definitions") or {}).get("subgraphs") or [])
                     if isinstance(d, dict) and "id" in d}
        self.top = _Scope(workflow, "", None, None)
        self.overrides: dict[tuple[int, Any], dict[str, Any]] = {}  # (id(scope), node id) → primitive values
        self.prompt: dict[str, dict] = {}
        self.emitted: list[tuple[_Scope, dict]] = []

    # -- passes --------------------------------------------------------------------------------
    def convert(self) -> dict:
        unknown: list[str] = []
        self._collect(self.top, unknown, muted=False)
        if unknown:
            raise WorkflowError("Workflow uses unknown node types: " + ", ".join(sorted(set(unknown))),
                                details=", ".join(sorted(set(unknown))), extra={"unknown_types": sorted(set(unknown))})
        for scope, node in self.emitted:
            self._emit(scope, node)
        for node in self.prompt.values():
            inputs = node["inputs"]
            for name in [k for k, v in inputs.items()
                         if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and v[0] not in self.prompt]:
                del inputs[name]
        return self.prompt

    def _collect(self, scope: _Scope, unknown: list[str], muted: bool) -> None:
        for node in scope.nodes.values():
            if node.get("type") == "PrimitiveNode":
                self._push_primitive(scope, node)
        for node in scope.nodes.values():
            typ = node.get("type")
            mode = node.get("mode", 0)
            if typ in self.defs:
                if mode in (MUTED, BYPASS) or muted:
                    continue
                inner = _Scope(self.defs[typ], scope.full_id(node["id"]) + ":", node, scope)
                self._collect(inner, unknown, muted)
                continue
            if isinstance(typ, str) and (typ.startswith("workflow>") or typ.startswith("workflow/")):
                raise WorkflowError(f"unsupported legacy group node '{typ}'")
            if typ in VIRTUAL_TYPES or mode in (MUTED, BYPASS) or muted:
                continue
            if typ not in self.info:
                unknown.append(str(typ))
                continue
            self.emitted.append((scope, node))

    def _push_primitive(self, scope: _Scope, node: dict) -> None:
        values = node.get("widgets_values") or []
        if not values:
            return
        for out in node.get("outputs") or []:
            for lid in out.get("links") or []:
                link = scope.links.get(lid)
                target = scope.nodes.get(link["target_id"]) if link else None
                if target is None:
                    continue
                slots = target.get("inputs") or []
                slot = slots[link["target_slot"]] if link["target_slot"] < len(slots) else None
                name = ((slot or {}).get("widget") or {}).get("name") or (slot or {}).get("name")
                if name:
                    self.overrides.setdefault((id(scope), target["id"]), {})[name] = values[0]

    # -- one node ------------------------------------------------------------------------------
    def _emit(self, scope: _Scope, node: dict) -> None:
        class_type = node["type"]
        info = self.info[class_type]
        inputs = self._widget_inputs(node, info)
        inputs.update(self.overrides.get((id(scope), node["id"]), {}))
        for slot in node.get("inputs") or []:
            if slot.get("link") is None:
                continue
            resolved = self._resolve(scope, slot["link"])
            if resolved is None:
                continue
            kind, a, b = resolved
            if kind == "link":
                inputs[slot["name"]] = [a, b]
            else:
                inputs[slot["name"]] = {"__value__": a} if isinstance(a, list) else a
        self.prompt[scope.full_id(node["id"])] = {
            "inputs": inputs, "class_type": class_type,
            "_meta": {"title": node.get("title") or info.get("display_name") or class_type}}

    def _widget_inputs(self, node: dict, info: dict) -> dict:
        raw = info.get("input") or {}
        order = info.get("input_order") or {}
        names: list[tuple[str, list]] = []
        for cat in ("required", "optional"):
            entries = raw.get(cat) or {}
            for name in order.get(cat, list(entries)):
                if name in entries:
                    names.append((name, entries[name]))
        for cat in ("required", "optional"):
            for name, entry in (raw.get(cat) or {}).items():
                if all(name != n for n, _ in names):
                    names.append((name, entry))
        widgets = []
        for name, entry in names:
            typ = entry[0] if entry else None
            opts = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            if (isinstance(typ, list) or typ in WIDGET_TYPES) and not opts.get("forceInput") \
                    and not opts.get("defaultInput"):
                widgets.append((name, typ, opts))
        values = node.get("widgets_values")
        inputs: dict[str, Any] = {}
        if isinstance(values, dict):
            for name, typ, opts in widgets:
                inputs[name] = self._wrap(values[name] if name in values else _default(typ, opts))
            return inputs
        values = list(values or [])
        i = 0
        for name, typ, opts in widgets:
            if i < len(values):
                inputs[name] = self._wrap(values[i])
                i += 1
            else:
                inputs[name] = self._wrap(_default(typ, opts))
            cag = opts.get("control_after_generate")
            if typ == "INT" and (cag is True or (cag is None and name in ("seed", "noise_seed"))):
                i += 1
            elif typ == "FLOAT" and cag is True:
                i += 1
            elif (typ == "COMBO" or isinstance(typ, list)) and cag is True:
                i += 2
        upload = any(opts.get(flag) for _, _, opts in widgets for flag in UPLOAD_FLAGS)
        expected = i + (1 if upload else 0)
        if len(values) != expected and not info.get("python_module", "nodes").startswith(("nodes", "comfy_extras")):
            self.warn(f"node {node.get('id')} ({node.get('type')}): {len(values)} widget values for {expected} "
                      f"widget slots; custom widgets may be misaligned")
        return inputs

    @staticmethod
    def _wrap(value: Any) -> Any:
        return {"__value__": value} if isinstance(value, list) else value

    # -- link resolution (§3.4) ----------------------------------------------------------------------
    def _resolve(self, scope: _Scope, link_id: Any, depth: int = 0):
        if depth > 1000:
            raise WorkflowError("link resolution does not terminate (a cycle of reroutes or bypassed nodes)")
        link = scope.links.get(link_id)
        if link is None:
            return None
        oid, oslot = link["origin_id"], link["origin_slot"]
        if oid == -10:  # a subgraph input: continue outside, through the instance
            inst, parent = scope.instance, scope.parent
            slots = inst.get("inputs") or []
            if oslot >= len(slots):
                return None
            if slots[oslot].get("link") is None:
                name = slots[oslot].get("name")
                over = parent and self.overrides.get((id(parent), inst["id"]), {})
                return ("value", over[name], None) if over and name in over else None
            return self._resolve(parent, slots[oslot]["link"], depth + 1)
        origin = scope.nodes.get(oid)
        if origin is None:
            return ("link", scope.full_id(oid), oslot)
        typ, mode = origin.get("type"), origin.get("mode", 0)
        if typ == "Reroute":
            slots = origin.get("inputs") or []
            return self._resolve(scope, slots[0].get("link"), depth + 1) if slots and slots[0].get("link") is not None \
                else None
        if typ == "PrimitiveNode":
            return None
        if mode == BYPASS:
            return self._through_bypass(scope, origin, oslot, link.get("type"), depth)
        if mode == MUTED:
            return ("link", scope.full_id(oid), oslot)
        if typ in self.defs:
            inner = _Scope(self.defs[typ], scope.full_id(oid) + ":", origin, scope)
            feed = next((l for l in inner.links.values() if l["target_id"] == -20 and l["target_slot"] == oslot), None)
            return self._resolve(inner, feed["id"], depth + 1) if feed else None
        return ("link", scope.full_id(oid), oslot)

    def _through_bypass(self, scope: _Scope, node: dict, slot: int, link_type: Any, depth: int):
        outputs = node.get("outputs") or []
        want = outputs[slot].get("type") if slot < len(outputs) else link_type
        inputs = node.get("inputs") or []
        chosen = None
        if slot < len(inputs) and _compatible(inputs[slot].get("type"), want):
            chosen = inputs[slot]
        if chosen is None:
            chosen = next((s for s in inputs if s.get("type") == want), None)
        if chosen is None:
            chosen = next((s for s in inputs if _compatible(s.get("type"), want)), None)
        if chosen is None or chosen.get("link") is None:
            return None
        return self._resolve(scope, chosen["link"], depth + 1)


def _default(typ: Any, opts: dict) -> Any:
    if "default" in opts:
        return opts["default"]
    if typ in ("INT", "FLOAT"):
        return opts.get("min", 0)
    if typ == "STRING":
        return ""
    if typ == "BOOLEAN":
        return False
    if isinstance(typ, list):
        return typ[0] if typ else None
    if typ == "COMBO":
        return (opts.get("options") or [None])[0]
    return None


def editor_to_api(workflow: dict, object_info: dict, *, warn: Callable[[str], None] | None = None) -> dict:
    """Convert an editor workflow to an API prompt; unknown node types raise one WorkflowError listing all."""
    if not is_editor_workflow(workflow):
        raise WorkflowError("Not an editor workflow (no 'nodes'/'links' arrays)")
    return _Converter(workflow, object_info, warn).convert()


# -- editor rewrites the CLI applies (workflows.md §3.7, §3.8) --------------------------------------------
SAVE_NODES = {"SaveImage", "SaveVideo", "SaveAnimatedWEBP", "SaveWEBM", "SaveAudio", "SaveGLB", "SaveAnimatedPNG",
              "CLIPSave", "VAESave", "ModelSave", "LoraSave", "SaveLatent"}
_COMMENTS = re.compile(r"/\*[\s\S]*?\*/|//[^\n]*")
_DATE_TOKENS = re.compile(r"yyyy|yy|MM|M|dd|d|hh|h|mm|m|ss|s")
_UNSAFE = re.compile(r'[/?<>\\:*|"\x00-\x1f\x7f]')


def dynamic_prompt(text: str, rng: random.Random) -> str:
    """Strip comments, pick one option of every `{a|b}` block (nested), then unescape `\\{ \\} \\|`."""
    text = _expand_choices(_COMMENTS.sub("", text), rng)
    return text.replace("\\{", "{").replace("\\}", "}").replace("\\|", "|")


def _expand_choices(s: str, rng: random.Random) -> str:
    out: list[str] = []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            out.append(s[i:i + 2])
            i += 2
            continue
        if c != "{":
            out.append(c)
            i += 1
            continue
        depth, j, start, options = 0, i + 1, i + 1, []
        while j < len(s):
            ch = s[j]
            if ch == "\\":
                j += 2
                continue
            if ch == "{":
                depth += 1
            elif ch == "}":
                if depth == 0:
                    break
                depth -= 1
            elif ch == "|" and depth == 0:
                options.append(s[start:j])
                start = j + 1
            j += 1
        if j >= len(s):  # unmatched "{": kept as text
            out.append(c)
            i += 1
            continue
        options.append(s[start:j])
        out.append(_expand_choices(rng.choice(options), rng))
        i = j + 1
    return "".join(out)


def format_date(fmt: str, now: datetime.datetime) -> str:
    """The editor's `%date:FORMAT%` tokens (yyyy yy MM M dd d hh h mm m ss s)."""
    values = {"yyyy": f"{now.year:04d}", "yy": f"{now.year % 100:02d}", "MM": f"{now.month:02d}", "M": str(now.month),
              "dd": f"{now.day:02d}", "d": str(now.day), "hh": f"{now.hour:02d}", "h": str(now.hour),
              "mm": f"{now.minute:02d}", "m": str(now.minute), "ss": f"{now.second:02d}", "s": str(now.second)}
    return _DATE_TOKENS.sub(lambda m: values[m.group(0)], fmt)


def expand_date_patterns(text: str, now: datetime.datetime | None = None) -> str:
    """Replace every `%date:FORMAT%` group (what the server does for SaveImage-family prefixes)."""
    now = now or datetime.datetime.now()
    return re.sub(r"%date:([^%]*)%", lambda m: format_date(m.group(1), now), text)


def filename_pattern(text: str, workflow: dict, prompt: dict, now: datetime.datetime | None = None) -> str:
    """`%date:…%` and `%Node.widget%` groups of a save node's filename_prefix (§3.7.2)."""
    now = now or datetime.datetime.now()

    def replace(m: re.Match) -> str:
        group = m.group(1)
        if group.startswith("date:"):
            return format_date(group[5:], now)
        if group.count(".") != 1:
            return m.group(0)
        name, widget = group.split(".")
        nodes = [n for n in workflow.get("nodes") or [] if isinstance(n, dict)]
        target = next((n for n in nodes if (n.get("properties") or {}).get("Node name for S&R") == name), None) \
            or next((n for n in nodes if n.get("title") == name), None)
        value = ((prompt.get(str(target["id"])) or {}).get("inputs") or {}).get(widget) if target else None
        if value is None or isinstance(value, list):
            return m.group(0)
        return _UNSAFE.sub("_", str(value))

    return re.sub(r"%([^%]+)%", replace, text)


def apply_editor_rewrites(prompt: dict, workflow: dict, object_info: dict, rng: random.Random) -> None:
    """What the official editor does before sending: dynamic prompts and filename patterns (in place)."""
    for node in prompt.values():
        info = object_info.get(node["class_type"]) or {}
        entries = {**(info.get("input") or {}).get("required", {}), **(info.get("input") or {}).get("optional", {})}
        inputs = node["inputs"]
        for name, entry in entries.items():
            opts = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            if entry and entry[0] == "STRING" and opts.get("dynamicPrompts") and isinstance(inputs.get(name), str):
                inputs[name] = dynamic_prompt(inputs[name], rng)
        if node["class_type"] in SAVE_NODES and isinstance(inputs.get("filename_prefix"), str):
            inputs["filename_prefix"] = filename_pattern(inputs["filename_prefix"], workflow, prompt)
