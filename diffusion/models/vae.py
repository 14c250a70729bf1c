"""AutoencoderKL (the SD 1.x / 2.x / SDXL VAE) in the LDM module layout (keys under `first_stage_model.`)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from diffusion.models import Conv2d, GroupNorm


def _norm(channels: int) -> GroupNorm:
    return GroupNorm(32, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with a 1x1 `nin_shortcut` when the width changes."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.conv2 = Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over pixels with 1x1-conv q/k/v/proj_out."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q = Conv2d(channels, channels, 1)
        self.k = Conv2d(channels, channels, 1)
        self.v = Conv2d(channels, channels, 1)
        self.proj_out = Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        n = self.norm(x)
        q, k, v = (t.reshape(b, 1, c, h * w).transpose(2, 3) for t in (self.q(n), self.k(n), self.v(n)))
        out = F.scaled_dot_product_attention(q, k, v)  # [B, 1, H*W, C]
        return x + self.proj_out(out.transpose(2, 3).reshape(b, c, h, w))


class Downsample(nn.Module):
    """Stride-2 3x3 conv after an asymmetric zero pad (right and bottom only)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest x2 then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution level: `block.j` ResnetBlocks plus an optional `downsample`/`upsample`."""

    def __init__(self, blocks: list[ResnetBlock]):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList()  # attn_resolutions is empty for every SD VAE


class Mid(nn.Module):
    """ResnetBlock, self-attention, ResnetBlock."""

    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    """Pixels `[B, 3, H, W]` in -1..1 → posterior moments `[B, 2z, H/8, W/8]`."""

    def __init__(self, ch: int, ch_mult: list[int], num_res_blocks: int, in_channels: int, z_channels: int):
        super().__init__()
        self.conv_in = Conv2d(in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        block_in = ch
        for i, mult in enumerate(ch_mult):
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(block_in, ch * mult))
                block_in = ch * mult
            level = Level(blocks)
            if i != len(ch_mult) - 1:
                level.downsample = Downsample(block_in)
            self.down.append(level)
        self.mid = Mid(block_in)
        self.norm_out = _norm(block_in)
        self.conv_out = Conv2d(block_in, 2 * z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent `[B, z, h, w]` → pixels `[B, 3, 8h, 8w]` in about -1..1."""

    def __init__(self, ch: int, ch_mult: list[int], num_res_blocks: int, out_ch: int, z_channels: int):
        super().__init__()
        block_in = ch * ch_mult[-1]
        self.conv_in = Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = Mid(block_in)
        levels: list[Level] = []
        for i in reversed(range(len(ch_mult))):
            blocks = []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, ch * ch_mult[i]))
                block_in = ch * ch_mult[i]
            level = Level(blocks)
            if i != 0:
                level.upsample = Upsample(block_in)
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)  # up.0 is the full-resolution level, run last
        self.norm_out = _norm(block_in)
        self.conv_out = Conv2d(block_in, out_ch, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            for block in level.block:
                h = block(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoencoderKL(nn.Module):
    """The SD VAE: `encode` gives the posterior mean (unscaled latent), `decode` maps it back."""

    def __init__(self, *, ch: int = 128, ch_mult: list[int] = (1, 2, 4, 4), num_res_blocks: int = 2,
                 in_channels: int = 3, out_ch: int = 3, z_channels: int = 4, embed_dim: int = 4):
        super().__init__()
        self.encoder = Encoder(ch, list(ch_mult), num_res_blocks, in_channels, z_channels)
        self.decoder = Decoder(ch, list(ch_mult), num_res_blocks, out_ch, z_channels)
        self.quant_conv = Conv2d(2 * z_channels, 2 * embed_dim, 1)
        self.post_quant_conv = Conv2d(embed_dim, z_channels, 1)
        self.embed_dim = embed_dim
        self.downscale = 2 ** (len(ch_mult) - 1)

    def encode(self, x: Tensor) -> Tensor:
        """Pixels `[B, 3, H, W]` in -1..1 → latent mean `[B, 4, H/8, W/8]`."""
        moments = self.quant_conv(self.encoder(x))
        return moments[:, : self.embed_dim]

    def decode(self, z: Tensor) -> Tensor:
        """Latent `[B, 4, h, w]` → pixels `[B, 3, 8h, 8w]` in about -1..1."""
        return self.decoder(self.post_quant_conv(z))
