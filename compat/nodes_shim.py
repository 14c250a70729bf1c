"""ComfyUI's `nodes` module members, added onto Kiln's own `nodes` package (same import name)."""
from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Mapping

from engine.context import current, request_interrupt
from engine.schema import MAX_RESOLUTION, NodeOutput


def v1_class_for(spec, registry):
    """A V1-looking class for a native node, so packs can call core nodes (`KSampler().sample(...)`)."""

    def input_types(cls):
        return spec.input_types(registry.paths)

    def execute(self, **kwargs):
        if spec.wants_ctx:
            ctx = current()
            if ctx is None:
                raise RuntimeError(f"{spec.class_type} needs a node context; call it while a node runs")
            kwargs["ctx"] = ctx
        result = spec.function(**kwargs)
        if isinstance(result, NodeOutput):
            return {"ui": result.ui, "result": result.result, "expand": result.expand}
        if len(spec.outputs) == 1 and not (isinstance(result, tuple) and len(result) == 1):
            return (result,)
        return () if result is None else result

    def __getattr__(self, name):
        # Core nodes are called by their ComfyUI method names (sample, decode, encode, ...): all run this node.
        if name.startswith("__"):
            raise AttributeError(name)
        return self.execute

    return type(spec.class_type, (), {
        "INPUT_TYPES": classmethod(input_types), "RETURN_TYPES": spec.output_types,
        "RETURN_NAMES": tuple(o.name or o.type for o in spec.outputs),
        "OUTPUT_IS_LIST": tuple(o.is_list for o in spec.outputs), "FUNCTION": "execute",
        "CATEGORY": spec.category, "OUTPUT_NODE": spec.output_node, "DESCRIPTION": spec.description,
        "execute": execute, "__getattr__": __getattr__, "__doc__": f"Kiln core node {spec.class_type}."})


class _ClassMappings(Mapping):
    """Read-only view class name → V1 class (native nodes appear as V1-looking wrappers)."""

    def __init__(self, registry):
        self._registry = registry
        self._wrappers: dict[str, type] = {}

    def __getitem__(self, key):
        spec = self._registry.specs[key]
        if spec.v1_class is not None:
            return spec.v1_class
        if key not in self._wrappers:
            self._wrappers[key] = v1_class_for(spec, self._registry)
        return self._wrappers[key]

    def __iter__(self):
        return iter(self._registry.specs)

    def __len__(self):
        return len(self._registry.specs)


class _DisplayNames(Mapping):
    def __init__(self, registry):
        self._registry = registry

    def __getitem__(self, key):
        return self._registry.display_name(key)

    def __iter__(self):
        return iter(self._registry.specs)

    def __len__(self):
        return len(self._registry.specs)


def before_node_execution() -> None:
    """ComfyUI's interrupt check point."""
    from comfy.model_management import throw_exception_if_processing_interrupted

    throw_exception_if_processing_interrupted()


def interrupt_processing(value: bool = True) -> None:
    request_interrupt(value)


def install(registry) -> None:
    """Attach the members to `sys.modules["nodes"]` (Kiln's package, or a fresh module without one)."""
    try:
        module = importlib.import_module("nodes")
    except ImportError:
        module = types.ModuleType("nodes")
        sys.modules["nodes"] = module
    mappings = _ClassMappings(registry)

    def node_class(name: str):
        """`nodes.KSampler`, `from nodes import VAEDecode`: the class of a registered node."""
        if name in registry.specs:
            return mappings[name]
        raise AttributeError(f"module 'nodes' has no attribute {name!r}")

    module.__getattr__ = node_class
    module.MAX_RESOLUTION = MAX_RESOLUTION
    module.NODE_CLASS_MAPPINGS = mappings
    module.NODE_DISPLAY_NAME_MAPPINGS = _DisplayNames(registry)
    module.before_node_execution = before_node_execution
    module.interrupt_processing = interrupt_processing
