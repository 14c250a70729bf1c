"""A1111 hypernetworks: small MLPs that rewrite the inputs of every attention's key and value
projections (checkpoints.md §10). Installed as forward pre-hooks while the model is active.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

_ACTIVATIONS = {
    "linear": nn.Identity, "relu": nn.ReLU, "leakyrelu": lambda: nn.LeakyReLU(0.01), "elu": nn.ELU,
    "swish": nn.Hardswish, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "softsign": nn.Softsign, "mish": nn.Mish,
}
_SETTINGS = {"activation_func": "linear", "is_layer_norm": False, "use_dropout": False,
             "activate_output": False, "last_layer_dropout": False}


def _mlp(sd: Mapping[str, Tensor], settings: dict) -> nn.Sequential:
    """One k or v module, built by walking the `.weight` prefixes in key order (LayerNorms included)."""
    prefixes = [k[: -len(".weight")] for k in sd if k.endswith(".weight")]
    layers: list[nn.Module] = []
    i = 0
    while i < len(prefixes):
        weight = sd[prefixes[i] + ".weight"]
        linear = nn.Linear(weight.shape[1], weight.shape[0])
        linear.weight.data = weight.float()
        linear.bias.data = sd[prefixes[i] + ".bias"].float()
        layers.append(linear)
        last = i == len(prefixes) - 1  # LayerNorm prefixes count too: with them no Linear is last (quirk)
        if settings["activation_func"] != "linear" and (not last or settings["activate_output"]):
            layers.append(_ACTIVATIONS[settings["activation_func"]]())
        if settings["is_layer_norm"]:
            i += 1
            norm = nn.LayerNorm(weight.shape[0])
            norm.weight.data = sd[prefixes[i] + ".weight"].float()
            norm.bias.data = sd[prefixes[i] + ".bias"].float()
            layers.append(norm)
        # Dropout is identity at inference; ComfyUI leaves it in training mode (random output),
        # which Kiln deliberately does not reproduce, so `use_dropout` adds nothing here.
        i += 1
    return nn.Sequential(*layers).eval().requires_grad_(False)


@dataclass
class Hypernetwork:
    """The (k, v) module pair for each context width, applied with `strength`."""

    modules: dict[int, tuple[nn.Module, nn.Module]]
    strength: float = 1.0

    @classmethod
    def from_state_dict(cls, sd: Mapping[object, object], strength: float) -> "Hypernetwork":
        """Parse an A1111 hypernetwork file's dict; unknown activations are refused."""
        settings = {k: sd.get(k, default) or default for k, default in _SETTINGS.items()}  # type: ignore[union-attr]
        if settings["activation_func"] not in _ACTIVATIONS:
            raise ValueError(f"unsupported hypernetwork activation {settings['activation_func']!r}")
        modules = {}
        for key, value in sd.items():
            if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
                k_sd, v_sd = value  # type: ignore[misc]
                modules[int(key)] = (_mlp(k_sd, settings), _mlp(v_sd, settings))
        if not modules:
            raise ValueError("not a hypernetwork file: no layer-width keys found")
        return cls(modules, strength)

    def install(self, unet: nn.Module) -> list[RemovableHandle]:
        """Pre-hooks on every attention's `to_k` and `to_v`: x ← x + strength·H(x), by input width."""
        handles = []
        for name, module in unet.named_modules():
            if name.endswith((".to_k", ".to_v")):
                index = 0 if name.endswith(".to_k") else 1
                handles.append(module.register_forward_pre_hook(self._hook(index)))
        return handles

    def _hook(self, index: int):
        def pre_hook(module: nn.Module, args: tuple) -> tuple:
            x = args[0]
            pair = self.modules.get(x.shape[-1])
            if pair is None:
                return args
            mlp = pair[index].to(x.device)
            with torch.no_grad():
                return (x + self.strength * mlp(x.float()).to(x.dtype),)
        return pre_hook
