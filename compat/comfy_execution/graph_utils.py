"""`comfy_execution.graph_utils`: GraphBuilder for node expansion, is_link, ExecutionBlocker."""
from engine.graph import ExecutionBlocker, GraphBuilder, is_link

__all__ = ["ExecutionBlocker", "GraphBuilder", "is_link"]
