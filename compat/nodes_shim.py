"""ComfyUI's `nodes` module members, added onto Kiln's own `nodes` package (same import name)."""
from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Mapping

from engine.context import request_interrupt
from engine.schema import MAX_RESOLUTION


class _ClassMappings(Mapping):
    """Read-only view class name → V1 class (native nodes appear as a tiny V1-looking wrapper)."""

    def __init__(self, registry):
        self._registry = registry

    def __getitem__(self, key):
        spec = self._registry.specs[key]
        return spec.v1_class if spec.v1_class is not None else spec.function

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
    module.MAX_RESOLUTION = MAX_RESOLUTION
    module.NODE_CLASS_MAPPINGS = _ClassMappings(registry)
    module.NODE_DISPLAY_NAME_MAPPINGS = _DisplayNames(registry)
    module.before_node_execution = before_node_execution
    module.interrupt_processing = interrupt_processing
