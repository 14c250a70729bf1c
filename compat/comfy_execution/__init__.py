"""ComfyUI's `comfy_execution` package (graph helpers only)."""
