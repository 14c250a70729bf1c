"""ClipHandle: the CLIP wire object — shared text encoders plus per-clone layer choice and patches."""

from __future__ import annotations

from functools import partial
from typing import Callable, Mapping

import torch
from torch import Tensor, nn

from diffusion.embeddings import EmbeddingLookup
from diffusion.keymaps.clip import to_checkpoint
from diffusion.model_handle import ModelHandle, WeightPatch
from diffusion.models.text_encoders import ClipTextEncoder
from diffusion.prompt import Weighted, chunk, token_groups
from diffusion.tokenizer import ClipTokenizer

Warn = Callable[[str], None]


class ClipHandle:
    """One family's text encoders (`clip_l`, `clip_h`, `clip_g`) behind ComfyUI's CLIP behaviour.

    Patch keys are `<encoder>.transformer.<HF name>` (e.g.
    `clip_l.transformer.text_model.encoder.layers.0.mlp.fc1.weight`); patching is done by the same
    mechanism as the UNet's (a `ModelHandle` over the encoders).
    """

    def __init__(self, encoders: Mapping[str, ClipTextEncoder], family: str, *,
                 load_device: torch.device | str = "cpu"):
        self.family = family
        self.encoders = nn.ModuleDict(dict(encoders))
        self.encoders.compute_dtype = torch.float32  # CLIP math is always float32 (§1); read by active()
        self.layer: int | None = None  # stop_at_clip_layer; None = each encoder's default
        # The UNet's patch mechanism, reused over the encoders (prediction/latent format do not apply).
        self._weights = ModelHandle(self.encoders, {}, family, "eps", None,  # type: ignore[arg-type]
                                    load_device=load_device)
        self.tokenizer = ClipTokenizer()

    @property
    def patches(self) -> dict[str, list[tuple[float, WeightPatch]]]:
        """Recorded `(strength, patch)` lists by module key."""
        return self._weights.patches

    @property
    def load_device(self) -> torch.device:
        return self._weights.load_device

    def model_size(self) -> int:
        """Bytes of the encoders' weights in their storage dtype."""
        return self._weights.model_size()

    def clone(self) -> ClipHandle:
        """A new handle on the same encoders with a copy of the patches and the layer choice."""
        other = ClipHandle.__new__(ClipHandle)
        other.family, other.encoders, other.layer = self.family, self.encoders, self.layer
        other.tokenizer = self.tokenizer
        other._weights = self._weights.clone()
        return other

    def set_layer(self, stop_at_clip_layer: int) -> None:
        """CLIP skip: use the hidden state `N + k` of every encoder (k < 0), §6.4."""
        self.layer = stop_at_clip_layer

    def hf_weight_keys(self, encoder: str) -> list[str]:
        """The HF parameter names of one encoder (what LoRA key maps are generated from)."""
        return self.encoders[encoder].hf_names()

    def weight_keys(self) -> set[str]:
        """Every patchable key, `<encoder>.transformer.<HF name>`."""
        return {f"{name}.transformer.{k}" for name in self.encoders for k in self.hf_weight_keys(name)}

    def add_patches(self, patches: Mapping[str, WeightPatch], strength: float = 1.0) -> set[str]:
        """Record patches for keys these encoders have; returns the keys that matched."""
        own = {}
        for key, patch in patches.items():
            name, _, hf = key.partition(".transformer.")
            if name in self.encoders and hf in self.encoders[name].hf_names():
                own[f"{name}.{self.encoders[name].module_key(hf)}"] = (key, patch)
        matched = self._weights.add_patches({k: p for k, (_, p) in own.items()}, strength)
        return {own[k][0] for k in matched}

    def checkpoint_state_dict(self) -> dict[str, Tensor]:
        """The encoders, patches merged, under the family's single-file checkpoint keys (for saving)."""
        with self._weights.active() as encoders:
            weights = {}
            for name, enc in encoders.items():
                patched = {k for k in enc.hf_names() if f"{name}.{enc.module_key(k)}" in self.patches}
                weights[name] = {k: v.clone() if k in patched else v for k, v in enc.hf_state_dict().items()}
        return to_checkpoint(weights, self.family)

    def tokenize(self, text: str, embeddings: EmbeddingLookup | None = None,
                 warn: Warn | None = None) -> dict[str, list[list[Weighted]]]:
        """Text → 77-token chunks of (token or TI vector, weight) per encoder."""
        return {name: self._chunks(name, text, embeddings, warn) for name in self.encoders}

    def _chunks(self, name: str, text: str, embeddings: EmbeddingLookup | None, warn: Warn | None
                ) -> list[list[Weighted]]:
        enc = self.encoders[name]
        embed = None if embeddings is None else partial(_lookup, embeddings, name, enc.config.width, warn)
        return chunk(token_groups(text, self.tokenizer, embed, warn), enc.config.pad_id)

    def encode(self, text: str, embeddings: EmbeddingLookup | None = None,
               warn: Warn | None = None) -> tuple[Tensor, Tensor | None]:
        """A prompt → (cond [1, 77k, D], pooled [1, P] or None); SDXL uses the same text for l and g."""
        warn = _once(warn)
        return self.encode_chunks(self.tokenize(text, embeddings, warn), warn)

    def encode_sdxl(self, text_g: str, text_l: str, embeddings: EmbeddingLookup | None = None,
                    warn: Warn | None = None) -> tuple[Tensor, Tensor | None]:
        """SDXL's two prompts: `text_g` for clip_g, `text_l` for clip_l; chunk counts are evened out."""
        if set(self.encoders) != {"clip_l", "clip_g"}:
            raise ValueError(f"text_g/text_l need an SDXL base CLIP (clip_l + clip_g), not {self.family}'s")
        warn = _once(warn)
        tokens = {"clip_l": self._chunks("clip_l", text_l, embeddings, warn),
                  "clip_g": self._chunks("clip_g", text_g, embeddings, warn)}
        k = max(len(c) for c in tokens.values())
        for name, chunks in tokens.items():
            chunks += chunk([], self.encoders[name].config.pad_id) * (k - len(chunks))
        return self.encode_chunks(tokens, warn)

    @torch.no_grad()
    def encode_chunks(self, tokens: dict[str, list[list[Weighted]]], warn: Warn | None = None
                      ) -> tuple[Tensor, Tensor | None]:
        """Run each encoder on its chunks and apply the token weights (§7, §8.1)."""
        conds, pooled = [], None
        with self._weights.active() as encoders:
            for name, enc in encoders.items():
                cond, pool = _encode_weighted(enc, tokens[name], self.layer, warn)
                conds.append(cond)
                if name != "clip_l" or len(encoders) == 1:
                    pooled = pool
        length = min(c.shape[1] for c in conds)
        return torch.cat([c[:, :length] for c in conds], dim=-1), pooled


def _encode_weighted(enc: ClipTextEncoder, chunks: list[list[Weighted]], layer: int | None,
                     warn: Warn | None) -> tuple[Tensor, Tensor]:
    """One encoder: chunks (+ the empty prompt when weighted) in one batch, then §7's interpolation."""
    pad = enc.config.pad_id
    weighted = any(w != 1.0 for c in chunks for _, w in c)
    batch = chunks + ([chunk([], pad)[0]] if weighted else [])
    ids, vectors, weights = [], {}, []
    for row, seq in enumerate(batch):
        seq = _drop_foreign_vectors(seq, enc.config.width, pad, warn)
        ids.append([t if isinstance(t, int) else 0 for t, _ in seq])
        weights.append([w for _, w in seq])
        vectors.update({(row, p): t for p, (t, _) in enumerate(seq) if not isinstance(t, int)})
    device = enc.text.embeddings.token_embedding.weight.device
    z, pooled = enc(torch.tensor(ids, device=device), vectors, enc.config.default_layer if layer is None else layer)
    if weighted:
        empty, z = z[-1:], z[:-1]
        w = torch.tensor(weights[:-1], dtype=z.dtype, device=device)[..., None]  # [K, 77, 1]
        z = torch.where(w != 1.0, (z - empty) * w + empty, z)
    return z.reshape(1, -1, z.shape[-1]), pooled[:1]  # [1, 77K, D], pooled of chunk 1


def _lookup(embeddings: EmbeddingLookup, encoder: str, width: int, warn: Warn | None, name: str) -> Tensor | None:
    """An embedding's vectors for one encoder; an unreadable file is reported and treated as missing."""
    try:
        return embeddings.vectors(name, encoder, width)
    except Exception as exc:  # any unreadable user file (safetensors, pickle, zip errors alike)
        if warn:
            warn(f"could not read embedding {name!r}: {exc}")
        return None


def _once(warn: Warn | None) -> Warn | None:
    """A warn callback that passes each distinct message on once (both SDXL encoders look names up)."""
    if warn is None:
        return None
    seen: set[str] = set()

    def once(message: str) -> None:
        if message not in seen:
            seen.add(message)
            warn(message)
    return once


def _drop_foreign_vectors(seq: list[Weighted], width: int, pad: int, warn: Warn | None) -> list[Weighted]:
    """TI vectors of another width are removed; the chunk is refilled with pads at the end (§5.3)."""
    kept = [(t, w) for t, w in seq if isinstance(t, int) or t.shape[-1] == width]
    if len(kept) < len(seq) and warn:
        warn(f"dropped {len(seq) - len(kept)} embedding vector(s) of the wrong width for a {width}-wide encoder")
    return kept + [(pad, 1.0)] * (len(seq) - len(kept))

