"""Kiln's built-in nodes; `builtin_specs()` collects the `NodeSpec` of every node function."""

from __future__ import annotations

import importlib
import importlib.util

from engine.schema import NodeSpec

# Every module of the node library, in registration order. Modules another teammate has not
# written yet are skipped; a module that exists but fails to import raises.
MODULES = (
    "nodes.loaders",
    "nodes.conditioning",
    "nodes.latent",
    "nodes.sampling",
    "nodes.vae",
    "nodes.image",
    "nodes.mask",
    "nodes.lora",
    "nodes.controlnet",
    "nodes.models",
    "nodes.upscale",
)


def builtin_specs() -> list[NodeSpec]:
    """The specs of every built-in node, module by module in declaration order."""
    specs: list[NodeSpec] = []
    seen: set[str] = set()
    for name in MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        module = importlib.import_module(name)
        for value in vars(module).values():
            spec = getattr(value, "spec", None)
            if isinstance(spec, NodeSpec) and getattr(value, "__module__", None) == name:
                if spec.class_type in seen:
                    raise ValueError(f"node {spec.class_type!r} is declared twice ({name})")
                seen.add(spec.class_type)
                specs.append(spec)
    return specs
