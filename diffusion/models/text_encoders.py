"""CLIP text encoders (SD1 clip_l, SD2 clip_h, SDXL clip_l + clip_g) on transformers' CLIP classes."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import CLIPTextConfig, CLIPTextModel

from diffusion.keymaps.clip import extract_encoders, family_group
from diffusion.tokenizer import BOS, EOS, MAX_LENGTH, VOCAB_SIZE


@dataclass(frozen=True)
class ClipConfig:
    """One text encoder's shape and behaviour (text-encoding.md §9)."""

    name: str  # "clip_l" | "clip_h" | "clip_g"
    width: int
    layers: int
    heads: int
    intermediate: int
    activation: str  # "quick_gelu" | "gelu"
    pad_id: int
    default_layer: int | None  # None = last layer with final LN; -2 = penultimate
    layer_norm_hidden_state: bool  # apply the final LN to a selected hidden layer
    projection: bool  # has text_projection (pooled output is projected)
    logit_scale: bool = False  # the checkpoint stores a (unused) logit_scale
    vocab: int = VOCAB_SIZE
    positions: int = MAX_LENGTH


def clip_heads(width: int) -> int:
    """Attention heads from the width: 64-wide heads (768→12, 1024→16, 1280→20), at least one."""
    return max(1, width // 64)


# Full-size encoders per family, in the order their outputs are concatenated.
FAMILY_ENCODERS: dict[str, list[ClipConfig]] = {
    "sd1": [ClipConfig("clip_l", 768, 12, 12, 3072, "quick_gelu", EOS, None, True, False)],
    "sd2": [ClipConfig("clip_h", 1024, 24, 16, 4096, "gelu", 0, -2, True, True, True)],
    "sdxl": [ClipConfig("clip_l", 768, 12, 12, 3072, "quick_gelu", EOS, -2, False, False),
             ClipConfig("clip_g", 1280, 32, 20, 5120, "gelu", 0, -2, False, True, True)],
    "sdxl_refiner": [ClipConfig("clip_g", 1280, 32, 20, 5120, "gelu", 0, -2, False, True, True)],
}


def family_configs(family: str) -> list[ClipConfig]:
    """The full-size encoder configs of a model family."""
    return FAMILY_ENCODERS[family_group(family)]


def tiny_config(family: str, width: int = 32, layers: int = 2, intermediate: int | None = None,
                encoder: str | None = None) -> ClipConfig:
    """A small config of a family's encoder (tests, demo model); loads back through shape inference."""
    base = next(c for c in family_configs(family) if encoder in (None, c.name))
    return replace(base, width=width, layers=layers, heads=clip_heads(width),
                   intermediate=intermediate or 4 * width)


_LAYER = re.compile(r"text_model\.encoder\.layers\.(\d+)\.")


def infer_config(base: ClipConfig, weights: dict[str, Tensor]) -> ClipConfig:
    """The family config with width, depth, MLP size, heads, vocab and positions read from shapes."""
    vocab, width = weights["text_model.embeddings.token_embedding.weight"].shape
    layers = 1 + max(int(m[1]) for k in weights if (m := _LAYER.match(k)))
    return replace(
        base, width=width, vocab=vocab, layers=layers, heads=clip_heads(width),
        intermediate=weights["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
        positions=weights["text_model.embeddings.position_embedding.weight"].shape[0],
        projection="text_projection.weight" in weights, logit_scale="logit_scale" in weights)


class ClipTextEncoder(nn.Module):
    """A CLIP text transformer with ComfyUI's forward: causal mask only, layer selection, fp32 math."""

    def __init__(self, config: ClipConfig):
        super().__init__()
        self.config = config
        hf = CLIPTextConfig(
            vocab_size=config.vocab, hidden_size=config.width, intermediate_size=config.intermediate,
            num_hidden_layers=config.layers, num_attention_heads=config.heads,
            max_position_embeddings=config.positions, hidden_act=config.activation,
            layer_norm_eps=1e-5, projection_dim=config.width, bos_token_id=BOS, eos_token_id=EOS,
            pad_token_id=config.pad_id)
        self.transformer = CLIPTextModel(hf)
        # transformers 4 nests the parts under `text_model`, transformers 5 does not.
        self._hf_prefix = "transformer." + ("text_model." if hasattr(self.transformer, "text_model") else "")
        self.text_projection = nn.Linear(config.width, config.width, bias=False) if config.projection else None
        self.logit_scale = nn.Parameter(torch.tensor(4.6052)) if config.logit_scale else None

    @property
    def text(self) -> nn.Module:
        """The module holding `embeddings`, `encoder` and `final_layer_norm`."""
        return getattr(self.transformer, "text_model", self.transformer)

    def module_key(self, hf_name: str) -> str:
        """This module's state-dict key for a transformers-4 style HF name (`text_model.…`)."""
        if hf_name.startswith("text_model."):
            return self._hf_prefix + hf_name.removeprefix("text_model.")
        return hf_name

    def hf_state_dict(self) -> dict[str, Tensor]:
        """The weights under HF names (the inverse of `module_key`), for saving and patching."""
        own = {self.module_key(k): k for k in self.hf_names()}
        return {own[k]: v for k, v in self.state_dict().items() if k in own}

    def hf_names(self) -> list[str]:
        """Every parameter's HF name."""
        names = [k.replace(self._hf_prefix, "text_model.", 1) for k, _ in self.named_parameters()
                 if k.startswith(self._hf_prefix)]
        return names + [k for k, _ in self.named_parameters() if not k.startswith("transformer.")]

    def load_hf(self, weights: dict[str, Tensor], assign: bool = True) -> None:
        """Load HF-named weights; every parameter must be present and nothing may be left over."""
        self.load_state_dict({self.module_key(k): v for k, v in weights.items()}, strict=True, assign=assign)

    def forward(self, tokens: Tensor, vectors: dict[tuple[int, int], Tensor] | None = None,
                layer: int | None = None) -> tuple[Tensor, Tensor]:
        """`tokens` [B, 77] ids (+ TI vectors by (row, position)) → (z [B, 77, width], pooled [B, P]).

        `layer` None = last layer with final LN; k < 0 = hidden state N+k, final LN only when the
        encoder has `layer_norm_hidden_state`; |k| > N falls back to the last layer (§6.3, §6.4).
        """
        t = self.text
        x = F.embedding(tokens, t.embeddings.token_embedding.weight).float()  # [B, 77, D]
        for (row, pos), vec in (vectors or {}).items():
            x[row, pos] = vec.to(x.device, torch.float32)
        x = x + t.embeddings.position_embedding.weight[: tokens.shape[1]].float()
        n = len(t.encoder.layers)
        select = None if layer is None or -layer > n else n + layer
        hidden = None
        for i, block in enumerate(t.encoder.layers):
            x = self._block(block, x)
            if i == select:
                hidden = x
        last = _layer_norm(t.final_layer_norm, x)
        if hidden is None:
            z = last
        else:
            z = _layer_norm(t.final_layer_norm, hidden) if self.config.layer_norm_hidden_state else hidden
        eos = (tokens == EOS).int().argmax(dim=1)  # first EOS (a TI vector is never an EOS id)
        pooled = last[torch.arange(tokens.shape[0], device=tokens.device), eos]  # [B, D]
        if self.text_projection is not None:
            pooled = F.linear(pooled, self.text_projection.weight.float())
        return z, pooled

    def _block(self, block: nn.Module, x: Tensor) -> Tensor:
        """One pre-LN transformer layer in float32, causal attention without a padding mask."""
        att = block.self_attn
        h = _layer_norm(block.layer_norm1, x)
        b, s, d = h.shape
        q, k, v = (_linear(p, h).view(b, s, self.config.heads, -1).transpose(1, 2)
                   for p in (att.q_proj, att.k_proj, att.v_proj))
        h = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, s, d)
        x = x + _linear(att.out_proj, h)
        h = _layer_norm(block.layer_norm2, x)
        return x + _linear(block.mlp.fc2, block.mlp.activation_fn(_linear(block.mlp.fc1, h)))


def _linear(layer: nn.Linear, x: Tensor) -> Tensor:
    return F.linear(x, layer.weight.to(x.dtype), None if layer.bias is None else layer.bias.to(x.dtype))


def _layer_norm(layer: nn.LayerNorm, x: Tensor) -> Tensor:
    return F.layer_norm(x, layer.normalized_shape, layer.weight.to(x.dtype), layer.bias.to(x.dtype), layer.eps)


def build_encoder(config: ClipConfig, weights: dict[str, Tensor] | None = None,
                  dtype: torch.dtype = torch.float16, generator: torch.Generator | None = None) -> ClipTextEncoder:
    """Build on the meta device, then take `weights` (HF names) by assignment, stored as `dtype`.

    Without weights the parameters are drawn from `generator` (tests, the demo model's initial state).
    """
    with torch.device("meta"):
        model = ClipTextEncoder(config)
    if weights is None:
        weights = random_weights(model, generator or torch.Generator().manual_seed(0))
    model.load_hf({k: v.to(dtype) for k, v in weights.items()}, assign=True)
    for name, buf in list(model.named_buffers()):  # transformers' non-persistent position_ids stay on meta
        if buf.is_meta:
            owner, _, attr = name.rpartition(".")
            if attr != "position_ids":
                raise RuntimeError(f"text encoder buffer {name} has no value")
            model.get_submodule(owner).register_buffer(
                attr, torch.arange(buf.shape[-1]).expand(buf.shape).clone(), persistent=False)
    return model.eval().requires_grad_(False)


def random_weights(model: ClipTextEncoder, generator: torch.Generator) -> dict[str, Tensor]:
    """Seeded initial weights: N(0, 0.02) everywhere, LayerNorm gains around 1 (HF names)."""
    shapes = {model.module_key(k): k for k in model.hf_names()}
    out = {}
    for key, param in model.named_parameters():
        value = torch.randn(param.shape, generator=generator) * 0.02
        if "layer_norm" in key and key.endswith(".weight"):
            value += 1.0
        out[shapes[key]] = value
    if model.logit_scale is not None:
        out["logit_scale"] = torch.tensor(4.6052)
    return out


def clip_from_state_dict(sd: Mapping[str, Tensor], family: str, dtype: torch.dtype = torch.float16, *,
                         load_device: torch.device | str = "cpu"):
    """A `ClipHandle` with the checkpoint's text encoders (config read from shapes), or None if absent.

    `dtype` is the storage dtype (ComfyUI stores CLIP as fp16 by default); the math runs in float32.
    """
    from diffusion.clip_handle import ClipHandle

    found = extract_encoders(sd, family)
    if not found:
        return None
    encoders = {}
    for base in family_configs(family):
        if base.name not in found:
            raise ValueError(f"{family} checkpoint lacks its {base.name} text encoder")
        weights = found[base.name]
        if not base.projection:  # clip_l's pooled output is never projected (§1): ignore a stray projection
            weights.pop("text_projection.weight", None)
        encoders[base.name] = build_encoder(infer_config(base, weights), weights, dtype)
    return ClipHandle(encoders, family_group(family), load_device=load_device)
