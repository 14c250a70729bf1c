"""ComfyUI compatibility shims for custom-node packs (execution.md §11.7).

`install(registry)` puts this folder on sys.path so packs can `import folder_paths`, `comfy.utils`,
`server`, `node_helpers`, `comfy_execution.graph`, ... and adds ComfyUI's `nodes` members onto Kiln's
own `nodes` package (the two share the name; see docs/contracts.md "compat").
"""
from __future__ import annotations

import os
import sys

from compat.state import STATE

COMPAT_DIR = os.path.dirname(os.path.abspath(__file__))


def install(registry) -> None:
    """Make the shims importable and point them at this registry (paths, node table, server bridge)."""
    STATE.registry = registry
    if COMPAT_DIR not in sys.path:
        sys.path.append(COMPAT_DIR)
    from compat import nodes_shim

    nodes_shim.install(registry)
    import server  # the shim module in this folder

    server.PromptServer.instance = registry.bridge
