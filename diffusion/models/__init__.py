"""Neural network architectures whose attribute paths mirror the checkpoint key names.

The layers below keep their weights in the *storage* dtype (what the file had, e.g. fp16) and
cast them to the input's dtype and device on the fly, so a model stored in fp16 can compute in
fp32 (or on another device) without a second full copy of its weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def cast_like(t: Tensor | None, x: Tensor) -> Tensor | None:
    """Return `t` in `x`'s dtype and device (no copy when they already match)."""
    if t is None or (t.dtype == x.dtype and t.device == x.device):
        return t
    return t.to(device=x.device, dtype=x.dtype, non_blocking=True)


class Linear(nn.Linear):
    """nn.Linear that computes in the input's dtype/device."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, cast_like(self.weight, x), cast_like(self.bias, x))


class Conv2d(nn.Conv2d):
    """nn.Conv2d that computes in the input's dtype/device."""

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, cast_like(self.weight, x), cast_like(self.bias, x))


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm that computes in the input's dtype/device."""

    def forward(self, x: Tensor) -> Tensor:
        return F.group_norm(x, self.num_groups, cast_like(self.weight, x), cast_like(self.bias, x), self.eps)


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm that computes in the input's dtype/device."""

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, cast_like(self.weight, x), cast_like(self.bias, x), self.eps)


def storage_dtype(module: nn.Module) -> torch.dtype:
    """The dtype most of the module's floating-point parameters are stored in."""
    counts: dict[torch.dtype, int] = {}
    for p in module.parameters():
        if p.is_floating_point():
            counts[p.dtype] = counts.get(p.dtype, 0) + p.numel()
    return max(counts, key=counts.get) if counts else torch.float32
