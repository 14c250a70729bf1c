"""The latent-diffusion UNet (SD 1.x / 2.x / SDXL) in the original LDM module layout.

Attribute paths equal the checkpoint keys under `model.diffusion_model.`, so a native state dict
loads with no renaming. Configuration is a plain dict (see `diffusion.configs`).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusion.models import Conv2d, GroupNorm, LayerNorm, Linear

Control = dict[str, list[Tensor | None]]


def timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (integer-valued) timesteps, cos half first; float32 `[B, dim]`."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def attention(q: Tensor, k: Tensor, v: Tensor, heads: int, upcast: bool = False) -> Tensor:
    """Multi-head attention on `[B, N, heads*d]` tensors through scaled_dot_product_attention."""
    b, _, inner = q.shape
    d = inner // heads
    dtype = q.dtype
    if upcast and dtype != torch.float32:  # SD2 attention overflows in fp16 without this
        q, k, v = q.float(), k.float(), v.float()
    q, k, v = (t.reshape(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, N, d]
    return out.transpose(1, 2).reshape(b, -1, inner).to(dtype)


class CrossAttention(nn.Module):
    """Self- or cross-attention with bias-free q/k/v projections (LDM `CrossAttention`)."""

    def __init__(self, query_dim: int, context_dim: int | None, heads: int, dim_head: int, upcast: bool = False):
        super().__init__()
        inner = heads * dim_head
        context_dim = context_dim or query_dim
        self.heads = heads
        self.upcast = upcast
        self.to_q = Linear(query_dim, inner, bias=False)
        self.to_k = Linear(context_dim, inner, bias=False)
        self.to_v = Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(Linear(inner, query_dim), nn.Dropout(0.0))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        context = x if context is None else context
        out = attention(self.to_q(x), self.to_k(context), self.to_v(context), self.heads, self.upcast)
        return self.to_out(out)


class GEGLU(nn.Module):
    """Gated GELU projection: one Linear producing value and gate halves."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = Linear(dim_in, dim_out * 2)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward with 4x expansion (`ff.net.0.proj`, `ff.net.2`)."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        inner = dim * mult
        self.net = nn.Sequential(GEGLU(dim, inner), nn.Dropout(0.0), Linear(inner, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Self-attention, cross-attention to the text context, feed-forward; pre-LayerNorm residuals."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int, upcast: bool = False):
        super().__init__()
        self.attn1 = CrossAttention(dim, None, heads, dim_head, upcast)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim, heads, dim_head, upcast)
        self.norm1 = LayerNorm(dim)
        self.norm2 = LayerNorm(dim)
        self.norm3 = LayerNorm(dim)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """Transformer over the pixels of a feature map; proj_in/out are 1x1 convs (SD1) or Linear (SD2/XL)."""

    def __init__(self, channels: int, heads: int, dim_head: int, depth: int, context_dim: int,
                 use_linear: bool, upcast: bool = False):
        super().__init__()
        inner = heads * dim_head
        self.use_linear = use_linear
        self.norm = GroupNorm(32, channels, eps=1e-6)
        self.proj_in = Linear(channels, inner) if use_linear else Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner, heads, dim_head, context_dim, upcast) for _ in range(depth))
        self.proj_out = Linear(inner, channels) if use_linear else Conv2d(inner, channels, 1)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        b, _, h, w = x.shape  # [B, C, H, W]
        x_in = x
        x = self.norm(x)
        if not self.use_linear:
            x = self.proj_in(x)
        x = x.flatten(2).transpose(1, 2)  # [B, H*W, inner]
        if self.use_linear:
            x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, context)
        if self.use_linear:
            x = self.proj_out(x)
        x = x.transpose(1, 2).reshape(b, -1, h, w)
        if not self.use_linear:
            x = self.proj_out(x)
        return x + x_in


class ResBlock(nn.Module):
    """Two 3x3 convs with the timestep embedding added in between; 1x1 skip conv when widths differ."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int):
        super().__init__()
        self.in_layers = nn.Sequential(GroupNorm(32, channels), nn.SiLU(), Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(GroupNorm(32, out_channels), nn.SiLU(), nn.Dropout(0.0),
                                        Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = nn.Identity() if channels == out_channels else Conv2d(channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class Downsample(nn.Module):
    """Stride-2 3x3 conv (`.op`)."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 (or to the matching skip's size) then a 3x3 conv (`.conv`)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:  # odd latent sizes: match the skip connection exactly
            x = F.interpolate(x, size=size, mode="nearest")
        return self.conv(x)


class TimestepEmbedSequential(nn.Sequential):
    """A block of layers that each get what they need: emb (ResBlock), context (transformer)."""

    def forward(self, x: Tensor, emb: Tensor, context: Tensor | None,  # type: ignore[override]
                size: tuple[int, int] | None = None) -> Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            elif isinstance(layer, Upsample):
                x = layer(x, size)
            else:
                x = layer(x)
        return x


def _heads(channels: int, num_heads: int, num_head_channels: int) -> tuple[int, int]:
    """(heads, dim_head) for a level: fixed head count (SD1) or fixed head width (SD2/SDXL)."""
    if num_head_channels > 0:
        return channels // num_head_channels, num_head_channels
    return num_heads, channels // num_heads


TransformerFactory = Callable[[int, int], SpatialTransformer]


def transformer_factory(context_dim: int, use_linear: bool, num_heads: int, num_head_channels: int,
                        upcast: bool) -> TransformerFactory:
    """A builder `(channels, depth) -> SpatialTransformer` applying the family's head rule."""
    def make(ch: int, depth: int) -> SpatialTransformer:
        heads, dim_head = _heads(ch, num_heads, num_head_channels)
        return SpatialTransformer(ch, heads, dim_head, depth, context_dim, use_linear, upcast)

    return make


def build_input_blocks(in_channels: int, model_channels: int, channel_mult: list[int], num_res_blocks: list[int],
                       transformer_depth: list[int], make_transformer: TransformerFactory
                       ) -> tuple[nn.ModuleList, list[int], int]:
    """`input_blocks` (shared by the UNet and ControlNet), each skip's channel count, and the deepest width."""
    emb_ch = model_channels * 4
    depths = list(transformer_depth)
    blocks = nn.ModuleList([TimestepEmbedSequential(Conv2d(in_channels, model_channels, 3, padding=1))])
    skip_chans = [model_channels]
    ch = model_channels
    for level, mult in enumerate(channel_mult):
        for _ in range(num_res_blocks[level]):
            layers: list[nn.Module] = [ResBlock(ch, emb_ch, mult * model_channels)]
            ch = mult * model_channels
            depth = depths.pop(0)
            if depth > 0:
                layers.append(make_transformer(ch, depth))
            blocks.append(TimestepEmbedSequential(*layers))
            skip_chans.append(ch)
        if level != len(channel_mult) - 1:
            blocks.append(TimestepEmbedSequential(Downsample(ch)))
            skip_chans.append(ch)
    return blocks, skip_chans, ch


def build_middle_block(ch: int, emb_ch: int, depth: int, make_transformer: TransformerFactory
                       ) -> TimestepEmbedSequential | None:
    """ResBlock (+ transformer + ResBlock when depth >= 0); None for depth -2 (no middle block)."""
    if depth <= -2:
        return None
    layers: list[nn.Module] = [ResBlock(ch, emb_ch, ch)]
    if depth >= 0:
        layers += [make_transformer(ch, depth), ResBlock(ch, emb_ch, ch)]
    return TimestepEmbedSequential(*layers)


class TimestepConditioned(nn.Module):
    """`time_embed` (+ SDXL's `label_emb`) shared by the UNet and the ControlNet: t (and y) → `emb`."""

    def _init_embeddings(self, model_channels: int, adm_in_channels: int | None) -> int:
        """Create the embedding MLPs (checkpoint key names); returns the embedding width."""
        self.model_channels = model_channels
        self.compute_dtype: torch.dtype | None = None  # None: compute in the weights' dtype
        emb_ch = model_channels * 4
        self.time_embed = nn.Sequential(Linear(model_channels, emb_ch), nn.SiLU(), Linear(emb_ch, emb_ch))
        if adm_in_channels:
            self.label_emb = nn.Sequential(nn.Sequential(Linear(adm_in_channels, emb_ch), nn.SiLU(), Linear(emb_ch, emb_ch)))
        return emb_ch

    def _dtype(self) -> torch.dtype:
        return self.compute_dtype or self.time_embed[0].weight.dtype

    def _embed(self, timesteps: Tensor, y: Tensor | None, batch: int, dtype: torch.dtype) -> Tensor:
        """`emb` `[B, 4mc]` from integer timesteps (a scalar is broadcast) and, for ADM models, `y`."""
        if timesteps.dim() == 0:
            timesteps = timesteps.expand(batch)
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(dtype))
        if hasattr(self, "label_emb"):
            if y is None:
                raise ValueError(f"this {type(self).__name__} needs the `y` (ADM) vector, "
                                 "e.g. SDXL's pooled text + size embedding")
            emb = emb + self.label_emb(y.to(dtype))
        return emb


class UNetModel(TimestepConditioned):
    """LDM UNet: input blocks, middle block, output blocks with skip connections, `out` head."""

    def __init__(self, *, in_channels: int, out_channels: int, model_channels: int, channel_mult: list[int],
                 num_res_blocks: list[int], transformer_depth: list[int], transformer_depth_middle: int,
                 transformer_depth_output: list[int], context_dim: int, use_linear_in_transformer: bool,
                 num_heads: int = -1, num_head_channels: int = -1, adm_in_channels: int | None = None,
                 attention_upcast: bool = False, **_ignored: Any):
        super().__init__()
        self.in_channels = in_channels
        emb_ch = self._init_embeddings(model_channels, adm_in_channels)

        transformer = transformer_factory(context_dim, use_linear_in_transformer, num_heads, num_head_channels,
                                          attention_upcast)
        self.input_blocks, skip_chans, ch = build_input_blocks(
            in_channels, model_channels, channel_mult, num_res_blocks, transformer_depth, transformer)
        middle = build_middle_block(ch, emb_ch, transformer_depth_middle, transformer)
        if middle is not None:
            self.middle_block = middle

        depths_out = list(transformer_depth_output)
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks[level] + 1):
                layers = [ResBlock(ch + skip_chans.pop(), emb_ch, mult * model_channels)]
                ch = mult * model_channels
                depth = depths_out.pop(0)
                if depth > 0:
                    layers.append(transformer(ch, depth))
                if level and i == num_res_blocks[level]:
                    layers.append(Upsample(ch))
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(GroupNorm(32, ch), nn.SiLU(), Conv2d(model_channels, out_channels, 3, padding=1))

    def forward(self, x: Tensor, timesteps: Tensor, context: Tensor, y: Tensor | None = None,
                control: Control | None = None) -> Tensor:
        """Predict noise (or v) for `x` `[B, in, h, w]` at integer `timesteps` `[B]` given `context` `[B, N, D]`.

        `y` `[B, adm]` is SDXL's pooled-text + size vector. `control` residual lists are in block
        order: `input[k]` is added after `input_blocks.k`, `output[k]` to the skip saved after
        `input_blocks.k`, `middle[0]` to the middle block's output (None entries are skipped).
        """
        dtype = self._dtype()
        x, context = x.to(dtype), context.to(dtype)
        emb = self._embed(timesteps, y, x.shape[0], dtype)  # [B, 4mc]

        def residual(name: str, k: int) -> Tensor | None:
            items = (control or {}).get(name) or []
            return items[k] if k < len(items) else None

        skips: list[Tensor] = []
        h = x
        for k, block in enumerate(self.input_blocks):
            h = block(h, emb, context)
            add = residual("input", k)
            if add is not None:
                h = h + add.to(h.dtype)
            skips.append(h)
        if hasattr(self, "middle_block"):
            h = self.middle_block(h, emb, context)
        add = residual("middle", 0)
        if add is not None:
            h = h + add.to(h.dtype)
        for block in self.output_blocks:
            k = len(skips) - 1
            skip = skips.pop()
            add = residual("output", k)
            if add is not None:
                skip = skip + add.to(skip.dtype)
            h = torch.cat([h, skip], dim=1)
            size = tuple(skips[-1].shape[-2:]) if skips else None
            h = block(h, emb, context, size)
        return self.out(h)  # [B, out, h, w]
