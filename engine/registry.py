"""Node registration (built-ins, then custom_nodes packs) and `/object_info` generation."""
from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import runpy
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Iterable

from engine.bridge import ServerBridge
from engine.compat_v1 import spec_from_class
from engine.paths import Paths
from engine.schema import NodeSpec, _UNSET

log = logging.getLogger("kiln.registry")

COMPAT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "compat")


@dataclass
class InputInfo:
    """One declared input of a node, read from its INPUT_TYPES dict."""

    name: str
    category: str          # "required" | "optional" | "hidden"
    type: Any              # "INT", "MODEL", a list (legacy combo), a hidden kind, ...
    options: dict
    config: list           # [type, options] as reported in error `input_config`

    @property
    def lazy(self) -> bool:
        return self.options.get("lazy") is True

    @property
    def raw_link(self) -> bool:
        return self.options.get("rawLink") is True


def input_table(raw: dict) -> dict[str, InputInfo]:
    """Flatten an INPUT_TYPES dict into name → InputInfo (required, optional, then hidden)."""
    table: dict[str, InputInfo] = {}
    for category in ("required", "optional", "hidden"):
        entries = raw.get(category) or {}
        for name, entry in entries.items():
            if category == "hidden":
                kind = entry[0] if isinstance(entry, (list, tuple)) else entry
                table[name] = InputInfo(name, category, kind, {}, [kind, {}])
                continue
            entry = tuple(entry) if isinstance(entry, (list, tuple)) else (entry,)
            typ = entry[0] if entry else "*"
            opts = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            table[name] = InputInfo(name, category, list(typ) if isinstance(typ, tuple) else typ, opts,
                                    [list(typ) if isinstance(typ, tuple) else typ, dict(opts)])
    return table


@dataclass
class PackResult:
    """How one custom-node pack loaded (the start-up summary)."""

    name: str
    path: str
    ok: bool
    seconds: float
    error: str = ""
    nodes: list[str] = field(default_factory=list)


class Registry:
    """All node specs by class name: built-ins first (registration order), then custom nodes."""

    def __init__(self, paths: Paths):
        self.paths = paths
        self.specs: dict[str, NodeSpec] = {}
        self.core: set[str] = set()
        self.web_directories: dict[str, str] = {}
        self.packs: list[PackResult] = []
        self.bridge = ServerBridge()
        self.config = None   # the RuntimeConfig when built by main.py (read by compat shims)

    def add(self, spec: NodeSpec, *, core: bool = False) -> None:
        """Register a spec; a custom node never replaces a core node (execution.md §11.2)."""
        if spec.class_type in self.core and not core:
            log.warning("custom node %s ignored: a core node has that name", spec.class_type)
            return
        if spec.class_type in self.specs and not core:
            log.warning("custom node %s replaces an earlier custom node of that name", spec.class_type)
        self.specs[spec.class_type] = spec
        if core:
            self.core.add(spec.class_type)

    def get(self, class_type: Any) -> NodeSpec | None:
        return self.specs.get(class_type) if isinstance(class_type, str) else None

    def __contains__(self, class_type: Any) -> bool:
        return isinstance(class_type, str) and class_type in self.specs

    def __len__(self) -> int:
        return len(self.specs)

    def display_name(self, class_type: str) -> str:
        spec = self.specs[class_type]
        return spec.display_name or class_type

    # -- built-ins -------------------------------------------------------------------------------
    def load_builtins(self) -> None:
        """Register `nodes.builtin_specs()` when the nodes package provides it (imported lazily)."""
        try:
            nodes_pkg = importlib.import_module("nodes")
        except ImportError:
            log.warning("no built-in node package found")
            return
        builtin_specs = getattr(nodes_pkg, "builtin_specs", None)
        if builtin_specs is None:
            log.warning("nodes package has no builtin_specs(); no built-in nodes registered")
            return
        for spec in builtin_specs():
            self.add(spec, core=True)

    # -- custom nodes ----------------------------------------------------------------------------
    def load_custom_nodes(self, dirs: Iterable[str] | None = None, *, disable_all: bool = False,
                          whitelist: Iterable[str] = ()) -> list[PackResult]:
        """Import every pack in the custom_nodes folders; a failing pack is logged and skipped."""
        import compat

        compat.install(self)
        allowed = set(whitelist)
        candidates: list[tuple[str, str]] = []
        for d in (self.paths.custom_nodes_dirs() if dirs is None else dirs):
            if not os.path.isdir(d):
                continue
            for entry in sorted(os.listdir(d)):
                full = os.path.join(d, entry)
                if entry == "__pycache__" or entry.endswith(".disabled") or entry.startswith("."):
                    continue
                if os.path.isdir(full) and os.path.isfile(os.path.join(full, "__init__.py")):
                    candidates.append((entry, full))
                elif entry.endswith(".py") and os.path.isfile(full):
                    candidates.append((entry[:-3], full))
        if disable_all:
            candidates = [c for c in candidates if c[0] in allowed]
        for _, full in candidates:
            script = os.path.join(full, "prestartup_script.py")
            if os.path.isdir(full) and os.path.isfile(script):
                try:
                    runpy.run_path(script, run_name="__prestartup__")
                except Exception:
                    log.error("prestartup script of %s failed:\n%s", full, traceback.format_exc())
        if candidates:
            log.info("Loading %d custom node pack(s). Packs are trusted code running with your permissions; "
                     "install only packs you trust.", len(candidates))
        results = [self._load_pack(name, full) for name, full in candidates]
        self.packs.extend(results)
        for r in results:
            log.info("%6.1f seconds%s: %s", r.seconds, "" if r.ok else " (IMPORT FAILED)", r.path)
        return results

    def _load_pack(self, name: str, path: str) -> PackResult:
        start = time.perf_counter()
        module_name = f"custom_nodes.{name}"
        self.bridge.begin_pack()
        try:
            module = _import_pack(module_name, path)
            mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
            if mappings is None:
                self.bridge.discard_pack()
                if hasattr(module, "comfy_entrypoint"):
                    msg = f"{name}: V3 node API is not supported"
                else:
                    msg = f"{name}: no NODE_CLASS_MAPPINGS, skipped"
                log.warning(msg)
                return PackResult(name, path, False, time.perf_counter() - start, msg)
            display = dict(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {})
            specs = []
            for class_type, cls in dict(mappings).items():
                cls.RELATIVE_PYTHON_MODULE = module_name
                specs.append(spec_from_class(class_type, cls, display_name=display.get(class_type),
                                             python_module=module_name))
        except (Exception, SystemExit):
            self.bridge.discard_pack()
            tb = traceback.format_exc()
            log.error("Cannot import %s module for custom nodes:\n%s", path, tb)
            for key in [k for k in sys.modules if k == module_name or k.startswith(module_name + ".")]:
                del sys.modules[key]
            return PackResult(name, path, False, time.perf_counter() - start, tb)
        self.bridge.commit_pack()
        for spec in specs:
            self.add(spec)
        web = getattr(module, "WEB_DIRECTORY", None)
        if isinstance(web, str):
            web_dir = os.path.abspath(os.path.join(path if os.path.isdir(path) else os.path.dirname(path), web))
            if os.path.isdir(web_dir):
                self.web_directories[name] = web_dir
        elif os.path.isdir(path):
            self._pyproject_web(path)
        return PackResult(name, path, True, time.perf_counter() - start, nodes=[s.class_type for s in specs])

    def _pyproject_web(self, pack_dir: str) -> None:
        """`[tool.comfy] web = "<dir>"` in the pack's pyproject.toml, registered under `[project] name`."""
        import tomllib

        try:
            with open(os.path.join(pack_dir, "pyproject.toml"), "rb") as f:
                data = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError):
            return
        web = (data.get("tool") or {}).get("comfy", {}).get("web")
        name = (data.get("project") or {}).get("name")
        if isinstance(web, str) and isinstance(name, str):
            web_dir = os.path.abspath(os.path.join(pack_dir, web))
            if os.path.isdir(web_dir):
                self.web_directories[name] = web_dir

    def failed_packs(self) -> list[PackResult]:
        return [p for p in self.packs if not p.ok]

    # -- object_info -----------------------------------------------------------------------------
    def object_info(self, class_type: str | None = None) -> dict:
        """`/object_info` (V1 entry variant for every node); a node that fails to describe is skipped."""
        names = list(self.specs) if class_type is None else ([class_type] if class_type in self.specs else [])
        out: dict[str, dict] = {}
        for name in names:
            try:
                info = self.node_info(name)
                if self.specs[name].v1_class is not None:
                    json.dumps(info)   # a pack's odd INPUT_TYPES must not break the whole answer
                out[name] = info
            except Exception:
                log.error("cannot describe node %s:\n%s", name, traceback.format_exc())
        return out

    def node_info(self, class_type: str) -> dict:
        spec = self.specs[class_type]
        raw = _jsonable(spec.input_types(self.paths))
        info: dict[str, Any] = {
            "input": raw,
            "input_order": {cat: list(raw[cat]) for cat in ("required", "optional", "hidden") if cat in raw},
            "output": [_jsonable(o.type) for o in spec.outputs],
            "output_is_list": [o.is_list for o in spec.outputs],
            "output_name": [o.name if o.name is not None else _jsonable(o.type) for o in spec.outputs],
            "name": class_type,
            "display_name": spec.display_name or class_type,
            "description": spec.description or "",
            "python_module": spec.python_module,
            "category": spec.category,
            "output_node": spec.output_node,
        }
        if spec.output_tooltips_defined:
            info["output_tooltips"] = (list(spec.extra["output_tooltips"]) if "output_tooltips" in spec.extra
                                       else [o.tooltip or "" for o in spec.outputs])
        if spec.deprecated:
            info["deprecated"] = True
        if spec.experimental:
            info["experimental"] = True
        if spec.api_node is not _UNSET:
            info["api_node"] = spec.api_node
        return info


def _jsonable(value: Any) -> Any:
    """Tuples → lists recursively (INPUT_TYPES verbatim otherwise)."""
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _import_pack(module_name: str, path: str):
    """Import a pack directory (as a package, so relative imports work) or a single .py file."""
    if "custom_nodes" not in sys.modules:
        import types

        pkg = types.ModuleType("custom_nodes")
        pkg.__path__ = []
        sys.modules["custom_nodes"] = pkg
    for key in [k for k in sys.modules if k == module_name or k.startswith(module_name + ".")]:
        del sys.modules[key]   # a re-load (tests, a second registry) must execute the pack again
    if os.path.isdir(path):
        spec = importlib.util.spec_from_file_location(module_name, os.path.join(path, "__init__.py"),
                                                      submodule_search_locations=[path])
    else:
        spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def build_registry(paths: Paths, *, builtins: bool = True, custom_nodes: bool = True,
                   disable_all_custom_nodes: bool = False, whitelist: Iterable[str] = (),
                   custom_node_dirs: Iterable[str] | None = None) -> Registry:
    """A registry with the built-in nodes and (unless disabled) the custom_nodes packs."""
    registry = Registry(paths)
    if builtins:
        registry.load_builtins()
    if custom_nodes:
        registry.load_custom_nodes(custom_node_dirs, disable_all=disable_all_custom_nodes, whitelist=whitelist)
    return registry
