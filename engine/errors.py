"""Exceptions shared by the engine, the nodes and the compatibility shims (torch-free)."""


class KilnError(Exception):
    """Base class of Kiln's own errors."""


class Interrupted(KilnError):
    """The user interrupted the running prompt; raised at an interrupt check point."""


class PathEscape(KilnError, ValueError):
    """A path built from request or prompt data would leave its root folder (security.md S6)."""


class WorkflowError(KilnError, ValueError):
    """A workflow file cannot be parsed or converted to API format."""

    def __init__(self, message: str, details: str = "", extra: dict | None = None):
        super().__init__(message)
        self.message = message
        self.details = details
        self.extra = extra or {}


class NodeInputError(KilnError):
    """A node asked for an input it does not have (check_lazy_status) or got malformed inputs."""


class DependencyCycleError(KilnError):
    """Node expansion created a dependency cycle at run time (execution.md §3.2 item 5)."""
