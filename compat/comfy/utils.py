"""`comfy.utils`: ProgressBar over Kiln's node context, common_upscale, safe load_torch_file."""
from __future__ import annotations

from engine.context import current


class ProgressBar:
    """Progress reports go through the running node's context (interrupt check, progress, preview)."""

    def __init__(self, total: int, node_id: str | None = None):
        self.total = total
        self.current = 0
        self.node_id = node_id
        self._ctx = current()

    def update_absolute(self, value, total=None, preview=None) -> None:
        if total is not None:
            self.total = total
        self.current = min(value, self.total) if self.total else value
        ctx = self._ctx or current()
        if ctx is not None:
            ctx.progress(self.current, self.total, preview)

    def update(self, value) -> None:
        self.update_absolute(self.current + value)


def common_upscale(samples, width: int, height: int, upscale_method: str, crop: str):
    """Resize `[B, C, H, W]` samples with ComfyUI's method names (optionally center-cropped first)."""
    from diffusion.image_ops import resize

    return resize(samples, width, height, upscale_method, crop)


def load_torch_file(ckpt: str, safe_load: bool = True, device=None, return_metadata: bool = False):
    """Load a state dict: safetensors directly, pickles only with weights_only=True (security.md S10)."""
    import torch

    device = device or torch.device("cpu")
    metadata = None
    if ckpt.lower().endswith((".safetensors", ".sft")):
        from safetensors import safe_open

        sd = {}
        with safe_open(ckpt, framework="pt", device=str(device)) as f:
            for k in f.keys():
                sd[k] = f.get_tensor(k)
            metadata = f.metadata()
    else:
        data = torch.load(ckpt, map_location=device, weights_only=True)
        sd = data.get("state_dict", data) if isinstance(data, dict) else data
    return (sd, metadata) if return_metadata else sd
