"""ControlNet (original "cldm" layout) and T2I-Adapter models; keys mirror the files (checkpoints.md §7).

They only compute residuals; scaling by strength and adding them to the UNet happens in sampling.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusion.models import Conv2d
from diffusion.models.unet import (Control, TimestepConditioned, build_input_blocks, build_middle_block,
                                   transformer_factory)


class ControlNet(TimestepConditioned):
    """A trainable copy of the UNet encoder that turns a hint image into skip/middle residuals."""

    def __init__(self, *, hint_channels: int, in_channels: int, model_channels: int, channel_mult: list[int],
                 num_res_blocks: list[int], transformer_depth: list[int], transformer_depth_middle: int,
                 context_dim: int, use_linear_in_transformer: bool, num_heads: int = -1, num_head_channels: int = -1,
                 adm_in_channels: int | None = None, attention_upcast: bool = False, **_ignored: Any):
        super().__init__()
        emb_ch = self._init_embeddings(model_channels, adm_in_channels)
        transformer = transformer_factory(context_dim, use_linear_in_transformer, num_heads, num_head_channels,
                                          attention_upcast)
        self.input_blocks, skip_chans, ch = build_input_blocks(
            in_channels, model_channels, channel_mult, num_res_blocks, transformer_depth, transformer)
        self.middle_block = build_middle_block(ch, emb_ch, transformer_depth_middle, transformer)
        # hint → 1/8 resolution features: 3x3 convs hint→16→16→32(s2)→32→96(s2)→96→256(s2)→mc, SiLU between
        widths = [(hint_channels, 16, 1), (16, 16, 1), (16, 32, 2), (32, 32, 1), (32, 96, 2), (96, 96, 1),
                  (96, 256, 2), (256, model_channels, 1)]
        hint: list[nn.Module] = []
        for i, (cin, cout, stride) in enumerate(widths):
            hint.append(Conv2d(cin, cout, 3, stride=stride, padding=1))
            if i < len(widths) - 1:
                hint.append(nn.SiLU())
        self.input_hint_block = nn.Sequential(*hint)
        self.zero_convs = nn.ModuleList(nn.Sequential(Conv2d(c, c, 1)) for c in skip_chans)
        self.middle_block_out = nn.Sequential(Conv2d(ch, ch, 1))

    def forward(self, x: Tensor, hint: Tensor, timesteps: Tensor, context: Tensor, y: Tensor | None = None) -> Control:
        """Residuals for `x` `[B, 4, h, w]` given `hint` `[B, C, 8h, 8w]` 0..1: `{"output": [per input block], "middle": [one]}`."""
        dtype = self._dtype()
        x, hint, context = x.to(dtype), hint.to(dtype), context.to(dtype)
        emb = self._embed(timesteps, y, x.shape[0], dtype)
        guided = self.input_hint_block(hint)  # [B, mc, h, w]
        outputs: list[Tensor | None] = []
        h = x
        for k, (block, zero) in enumerate(zip(self.input_blocks, self.zero_convs)):
            h = block(h, emb, context)
            if k == 0:
                h = h + guided
            outputs.append(zero(h))
        h = self.middle_block(h, emb, context)
        return {"input": [], "middle": [self.middle_block_out(h)], "output": outputs}


# ---------------------------------------------------------------------------------------------
# T2I-Adapter (TencentARC): a small conv network over the pixel-unshuffled hint.


class AdapterResBlock(nn.Module):
    """Full-adapter block: optional downsample, optional `in_conv`, conv-ReLU-conv, optional `skep` skip conv."""

    def __init__(self, in_c: int, out_c: int, *, down: bool, ksize: int, has_in_conv: bool, has_skep: bool,
                 use_conv: bool):
        super().__init__()
        pad = ksize // 2
        self.down = down
        if down and use_conv:
            self.down_opt = nn.Module()
            self.down_opt.op = Conv2d(in_c, in_c, 3, stride=2, padding=1)
        self.use_conv = use_conv
        if has_in_conv:
            self.in_conv = Conv2d(in_c, out_c, ksize, padding=pad)
        self.block1 = Conv2d(out_c, out_c, 3, padding=1)
        self.block2 = Conv2d(out_c, out_c, ksize, padding=pad)
        if has_skep:
            self.skep = Conv2d(in_c, out_c, ksize, padding=pad)

    def forward(self, x: Tensor) -> Tensor:
        if self.down:
            x = self.down_opt.op(x) if self.use_conv else F.avg_pool2d(x, 2, 2)
        if hasattr(self, "in_conv"):
            x = self.in_conv(x)
        h = self.block2(F.relu(self.block1(x)))
        return h + (self.skep(x) if hasattr(self, "skep") else x)


class T2IAdapter(nn.Module):
    """Full T2I-Adapter for SD1/SD2: 4 levels [c, 2c, 4c, 4c], pixel-unshuffle 8; one feature map per level."""

    def __init__(self, *, cin: int, channels: list[int], nums_rb: int, ksize: int, use_conv: bool,
                 blocks: list[dict[str, bool]]):
        super().__init__()
        self.unshuffle = 8
        self.input_channels = cin // self.unshuffle ** 2
        self.nums_rb = nums_rb
        self.conv_in = Conv2d(cin, channels[0], 3, padding=1)
        body = []
        for level, c in enumerate(channels):
            for j in range(nums_rb):
                first = j == 0 and level > 0
                body.append(AdapterResBlock(channels[level - 1] if first else c, c, down=first, ksize=ksize,
                                            use_conv=use_conv, **blocks[level * nums_rb + j]))
        self.body = nn.ModuleList(body)

    def forward(self, hint: Tensor) -> list[Tensor]:
        """Features per level (1/8, 1/16, 1/32, 1/64 of the hint) for a hint `[B, C, H, W]` 0..1."""
        dtype = self.conv_in.weight.dtype
        x = self.conv_in(F.pixel_unshuffle(hint.to(dtype), self.unshuffle))
        features = []
        for level in range(len(self.body) // self.nums_rb):
            for j in range(self.nums_rb):
                x = self.body[level * self.nums_rb + j](x)
            features.append(x)
        return features


class LightExtractor(nn.Module):
    """One Adapter_light level: optional 2x avg-pool, in_conv, residual blocks `body.k`, out_conv."""

    def __init__(self, in_c: int, mid_c: int, out_c: int, n_blocks: int, down: bool):
        super().__init__()
        self.down = down
        self.in_conv = Conv2d(in_c, mid_c, 1)
        self.body = nn.ModuleList(ResidualLight(mid_c) for _ in range(n_blocks))
        self.out_conv = Conv2d(mid_c, out_c, 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.down:
            x = F.avg_pool2d(x, 2, 2)
        x = self.in_conv(x)
        for block in self.body:
            x = block(x)
        return self.out_conv(x)


class ResidualLight(nn.Module):
    """conv-ReLU-conv with identity skip (`block1`, `block2`)."""

    def __init__(self, c: int):
        super().__init__()
        self.block1 = Conv2d(c, c, 3, padding=1)
        self.block2 = Conv2d(c, c, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block2(F.relu(self.block1(x)))


class T2IAdapterLight(nn.Module):
    """Adapter_light: four extractor levels with quarter-width middles, pixel-unshuffle 8."""

    def __init__(self, *, cin: int, channels: list[int], nums_rb: int):
        super().__init__()
        self.unshuffle = 8
        self.input_channels = cin // self.unshuffle ** 2
        levels = []
        for i, c in enumerate(channels):
            levels.append(LightExtractor(cin if i == 0 else channels[i - 1], c // 4, c, nums_rb, down=i > 0))
        self.body = nn.ModuleList(levels)

    def forward(self, hint: Tensor) -> list[Tensor]:
        """Features per level for a hint `[B, C, H, W]` 0..1."""
        x = F.pixel_unshuffle(hint.to(self.body[0].in_conv.weight.dtype), self.unshuffle)
        features = []
        for level in self.body:
            x = level(x)
            features.append(x)
        return features


def t2i_adapter_from_shapes(shapes: dict[str, Any]) -> nn.Module:
    """Build the (meta-device-friendly) adapter a state dict describes (checkpoints.md §7.4)."""
    from diffusion.detect import UnsupportedModel

    if "body.0.in_conv.weight" in shapes:
        n_rb = 0
        while f"body.0.body.{n_rb}.block1.weight" in shapes:
            n_rb += 1
        channels = [int(shapes[f"body.{i}.out_conv.weight"][0]) for i in range(4)]
        return T2IAdapterLight(cin=int(shapes["body.0.in_conv.weight"][1]), channels=channels, nums_rb=n_rb)
    cin, c = int(shapes["conv_in.weight"][1]), int(shapes["conv_in.weight"][0])
    if cin in (256, 768):
        raise UnsupportedModel("SDXL T2I-Adapters (pixel-unshuffle 16) are not supported yet")
    n_blocks = 0
    while f"body.{n_blocks}.block1.weight" in shapes:
        n_blocks += 1
    blocks = [{"has_in_conv": f"body.{i}.in_conv.weight" in shapes, "has_skep": f"body.{i}.skep.weight" in shapes}
              for i in range(n_blocks)]
    return T2IAdapter(cin=cin, channels=[c, 2 * c, 4 * c, 4 * c], nums_rb=n_blocks // 4,
                      ksize=int(shapes["body.0.block2.weight"][2]),
                      use_conv=any(k.endswith("down_opt.op.weight") for k in shapes), blocks=blocks)
