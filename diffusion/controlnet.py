"""Applying ControlNets and T2I-Adapters during sampling (checkpoints.md §7.3, sampling.md §6.6).

An `AppliedControl` is what a conditioning entry carries under `"control"`: a loaded control model
with its hint, strength and active range, chained to the entry's previous control. Sampling calls
`prepare(percent_to_sigma)` once and `get_control(x_in, t, sigma, context, y)` per model call.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import Callable

import torch
from torch import Tensor

from diffusion import memory
from diffusion.image_ops import resize
from diffusion.loading import ControlModel

Residuals = dict[str, list[Tensor | None]]


def _sum(a: Residuals | None, b: Residuals | None) -> Residuals | None:
    """Element-wise sum of two residual dicts (None entries count as zero)."""
    if a is None or b is None:
        return a or b
    out: Residuals = {}
    for key in set(a) | set(b):
        x, y = a.get(key) or [], b.get(key) or []
        out[key] = [p if q is None else q if p is None else p + q
                    for p, q in ((x[i] if i < len(x) else None, y[i] if i < len(y) else None)
                                 for i in range(max(len(x), len(y))))]
    return out


def _t2i_positions(n_features: int) -> list[int]:
    """Input-block indices that receive the adapter's per-level features (SD1: last block of each level)."""
    if n_features != 4:
        raise ValueError(f"a T2I-Adapter with {n_features} feature levels is not supported (SD1/SD2 adapters have 4)")
    return [2, 5, 8, 11]


@dataclass
class AppliedControl:
    """A control model with its hint, strength and schedule range; chained through `previous`."""

    control: ControlModel
    hint: Tensor                          # [B, C, H, W] 0..1, channels first
    strength: float = 1.0
    start_percent: float = 0.0
    end_percent: float = 1.0
    previous: "AppliedControl | None" = None
    _sigma_range: tuple[float, float] | None = field(default=None, repr=False)
    _hint_cache: dict = field(default_factory=dict, repr=False)
    _weights: ExitStack | None = field(default=None, repr=False)

    def chained_to(self, previous: "AppliedControl | None") -> "AppliedControl":
        """A copy of this control that sums its residuals with `previous`'s."""
        return replace(self, previous=previous, _sigma_range=None, _hint_cache={}, _weights=None)

    def prepare(self, percent_to_sigma: Callable[[float], float]) -> None:
        """Before sampling: percent range → sigmas, and the model's weights cast to the compute dtype once."""
        self._sigma_range = (float(percent_to_sigma(self.start_percent)), float(percent_to_sigma(self.end_percent)))
        if self._weights is None:
            memory.load_to(self.control.model, self.control.load_device)
            self._weights = ExitStack()
            self._weights.enter_context(memory.weights_as(self.control.model, self.control.compute_dtype))
        if self.previous is not None:
            self.previous.prepare(percent_to_sigma)

    def cleanup(self) -> None:
        """After sampling: the model's original weights back (bit-identical)."""
        if self._weights is not None:
            self._weights.close()
            self._weights = None
        if self.previous is not None:
            self.previous.cleanup()

    def _active(self, sigma: Tensor) -> bool:
        if self._sigma_range is None:
            return True
        start, end = self._sigma_range
        s = float(sigma.flatten()[0])
        return not (s > start or s < end)

    def _hint_for(self, x: Tensor, multiple: int = 1) -> Tensor:
        """The hint resized (center crop + nearest-exact) to 8× the latent size and repeated over the batch."""
        h, w = x.shape[-2] * 8, x.shape[-1] * 8
        h, w = -(-h // multiple) * multiple, -(-w // multiple) * multiple
        key = (h, w, x.shape[0], x.device, self.control.compute_dtype)
        if key not in self._hint_cache:
            hint = resize(self.hint.float(), w, h, "nearest-exact", "center")
            if x.shape[0] % hint.shape[0] == 0:
                hint = hint.repeat(x.shape[0] // hint.shape[0], 1, 1, 1)
            else:
                hint = hint[:1].expand(x.shape[0], -1, -1, -1)
            self._hint_cache = {key: hint.to(x.device, self.control.compute_dtype)}
        return self._hint_cache[key]

    @torch.no_grad()
    def get_control(self, x: Tensor, t: Tensor, sigma: Tensor, context: Tensor, y: Tensor | None) -> Residuals | None:
        """Residuals for one model call, already multiplied by strength, plus the chained ones."""
        previous = self.previous.get_control(x, t, sigma, context, y) if self.previous is not None else None
        if not self._active(sigma):
            return previous
        model = self.control.model
        memory.load_to(model, self.control.load_device)
        dtype = self.control.compute_dtype
        x_dev = x.to(self.control.load_device)
        if self.control.kind == "t2i_adapter":
            hint = self._hint_for(x_dev, multiple=getattr(model, "unshuffle", 8))
            if getattr(model, "input_channels", 3) == 1 and hint.shape[1] == 3:
                hint = hint.mean(dim=1, keepdim=True)
            features = model(hint.to(dtype))
            positions = _t2i_positions(len(features))
            residuals: Residuals = {"input": [None] * (positions[-1] + 1)}
            for pos, feature in zip(positions, features):
                residuals["input"][pos] = feature
        else:
            old = model.compute_dtype
            model.compute_dtype = dtype
            try:
                residuals = model(x_dev, self._hint_for(x_dev), t.to(x_dev.device), context.to(x_dev.device),
                                  None if y is None else y.to(x_dev.device))
            finally:
                model.compute_dtype = old
        scaled: Residuals = {}
        for key, items in residuals.items():
            scaled[key] = []
            for r in items:
                if r is None:
                    scaled[key].append(None)
                    continue
                r = r.float()
                if self.control.global_average_pooling:
                    r = r.mean(dim=(2, 3), keepdim=True).expand_as(r)
                scaled[key].append(r * self.strength)
        return _sum(previous, scaled)


def apply_control(conditioning: list, control: ControlModel, hint: Tensor, strength: float,
                  start_percent: float, end_percent: float, shared: dict[int, AppliedControl],
                  extra: dict | None = None) -> list:
    """A copy of `conditioning` with the control attached to every entry (chained to its previous one).

    `shared` maps id(previous control) → the new control, so positive and negative entries that had
    the same previous control share the same new object (and its batched evaluation).
    """
    out = []
    base = AppliedControl(control, hint, strength, start_percent, end_percent)
    for cond, options in conditioning:
        previous = options.get("control")
        key = id(previous)
        if key not in shared:
            shared[key] = base.chained_to(previous)
        out.append([cond, {**options, "control": shared[key], **(extra or {})}])
    return out
