"""`comfy_execution.graph`: ExecutionBlocker and the live prompt type, from Kiln's engine."""
from engine.graph import DynamicPrompt, ExecutionBlocker, GraphBuilder, is_link

__all__ = ["DynamicPrompt", "ExecutionBlocker", "GraphBuilder", "is_link"]
