"""ComfyUI's `comfy` package surface used by simple packs (utils, model_management, samplers, types)."""
