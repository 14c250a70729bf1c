"""Where the shims find the running Kiln: the registry (paths, nodes, bridge) and runtime hooks."""
from __future__ import annotations

from typing import Any, Callable


class _State:
    registry: Any = None
    unload_all_models: Callable[[], None] | None = None
    torch_device: Callable[[], Any] | None = None

    @property
    def paths(self):
        if self.registry is None:
            raise RuntimeError("Kiln compatibility shims used before the registry was installed")
        return self.registry.paths


STATE = _State()
