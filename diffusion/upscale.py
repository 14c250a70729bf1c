"""ESRGAN-family super-resolution (RRDBNet): state-dict unwrapping, layout conversion, tiled upscaling.

The network's attribute paths are the old ESRGAN layout (`model.0`, `model.1.sub.N.RDB1.conv1.0`, ...),
so old files load as they are; Real-ESRGAN / BSRGAN files are renamed to it (checkpoints.md §11).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as F

_WRAPPER_KEYS = ("model_state_dict", "state_dict", "params_ema", "params-ema", "params", "model", "net")
_GROWTH = 32


def unwrap_state_dict(sd: Mapping[str, object]) -> dict[str, Tensor]:
    """Strip training wrappers (`params_ema`, `module.` ...) around an upscaler's weights."""
    for key in _WRAPPER_KEYS:
        if isinstance(sd.get(key), Mapping):
            sd = sd[key]  # type: ignore[assignment]
            break
    if len(sd) == 1:
        (only,) = sd.values()
        if isinstance(only, Mapping):
            sd = only
    for prefix in ("module.", "netG."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return dict(sd)  # type: ignore[arg-type]


def to_old_layout(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a Real-ESRGAN (basicsr) or BSRGAN state dict to the old ESRGAN layout."""
    if "model.0.weight" in sd:
        return dict(sd)
    if "body.0.rdb1.conv1.weight" in sd:
        body, trunk, up, hr = r"body\.(\d+)\.rdb(\d)\.conv(\d)\.", "conv_body.", "conv_up", "conv_hr."
    elif "RRDB_trunk.0.RDB1.conv1.weight" in sd:
        body, trunk, up, hr = r"RRDB_trunk\.(\d+)\.RDB(\d)\.conv(\d)\.", "trunk_conv.", "upconv", "HRconv."
    else:
        raise ValueError(f"not an ESRGAN-family upscale model: first keys {sorted(sd)[:5]}")
    nb = 1 + max(int(m.group(1)) for k in sd if (m := re.match(body, k)))
    n_up = len({k.split(".")[0] for k in sd if re.match(re.escape(up) + r"\d+\.", k)})
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        if m := re.match(body, key):
            new = f"model.1.sub.{m.group(1)}.RDB{m.group(2)}.conv{m.group(3)}.0.{key[m.end():]}"
        elif key.startswith("conv_first."):
            new = "model.0." + key[len("conv_first."):]
        elif key.startswith(trunk):
            new = f"model.1.sub.{nb}." + key[len(trunk):]
        elif m := re.match(re.escape(up) + r"(\d+)\.", key):
            new = f"model.{3 * int(m.group(1))}." + key[m.end():]
        elif key.startswith(hr):
            new = f"model.{3 * n_up + 2}." + key[len(hr):]
        elif key.startswith("conv_last."):
            new = f"model.{3 * n_up + 4}." + key[len("conv_last."):]
        else:
            raise ValueError(f"unexpected key in upscale model: {key}")
        out[new] = value
    return out


@dataclass(frozen=True)
class RRDBConfig:
    """Hyper-parameters of an RRDBNet, read from the old-layout shapes (checkpoints.md §11.2)."""

    in_nc: int
    out_nc: int
    nf: int
    nb: int
    n_up: int          # number of ×2 nearest-upsample + conv stages
    shuffle: int = 1   # pixel-unshuffle factor of Real-ESRGAN ×2 / ×1 models

    @property
    def scale(self) -> int:
        """Output size / input size."""
        return 2 ** self.n_up // self.shuffle

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, Tensor]) -> "RRDBConfig":
        """Infer the network shape from old-layout key names and tensor shapes."""
        indices = [int(k.split(".")[1]) for k in sd if re.match(r"model\.\d+\.", k)]
        seq = 1 + max(indices)
        n_up = (seq - 5) // 3
        # model.1.sub.{0..nb-1} are the RRDBs and model.1.sub.{nb} the trunk conv.
        nb = max(int(k.split(".")[3]) for k in sd if k.startswith("model.1.sub."))
        first = sd["model.0.weight"]
        in_nc, out_nc = first.shape[1], sd[f"model.{seq - 1}.weight"].shape[0]
        shuffle = int(math.isqrt(in_nc // out_nc)) if in_nc in (4 * out_nc, 16 * out_nc) else 1
        return cls(in_nc=in_nc, out_nc=out_nc, nf=first.shape[0], nb=nb, n_up=n_up, shuffle=shuffle)


def _conv(c_in: int, c_out: int, act: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1)]
    if act:
        layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


class DenseBlock(nn.Module):
    """Five densely connected 3×3 convs with a 0.2-scaled residual."""

    def __init__(self, nf: int):
        super().__init__()
        for k in range(1, 6):
            setattr(self, f"conv{k}", _conv(nf + (k - 1) * _GROWTH, nf if k == 5 else _GROWTH, act=k < 5))

    def forward(self, x: Tensor) -> Tensor:
        feats = [x]
        for k in range(1, 6):
            feats.append(getattr(self, f"conv{k}")(torch.cat(feats, 1)))
        return x + 0.2 * feats[-1]


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks and a 0.2-scaled skip."""

    def __init__(self, nf: int):
        super().__init__()
        self.RDB1, self.RDB2, self.RDB3 = DenseBlock(nf), DenseBlock(nf), DenseBlock(nf)

    def forward(self, x: Tensor) -> Tensor:
        return x + 0.2 * self.RDB3(self.RDB2(self.RDB1(x)))


class _Trunk(nn.Module):
    """`model.1`: the RRDB chain plus trunk conv, added to its input."""

    def __init__(self, nf: int, nb: int):
        super().__init__()
        self.sub = nn.Sequential(*[RRDB(nf) for _ in range(nb)], nn.Conv2d(nf, nf, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.sub(x)


class RRDBNet(nn.Module):
    """ESRGAN generator in the old key layout (Wang et al. 2018, ESRGAN)."""

    def __init__(self, config: RRDBConfig):
        super().__init__()
        self.config = config
        nf = config.nf
        layers: list[nn.Module] = [nn.Conv2d(config.in_nc, nf, 3, padding=1), _Trunk(nf, config.nb)]
        for _ in range(config.n_up):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(nf, nf, 3, padding=1),
                       nn.LeakyReLU(0.2, inplace=True)]
        layers += [nn.Conv2d(nf, nf, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
                   nn.Conv2d(nf, config.out_nc, 3, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:  # [B, C, H, W] -> [B, C, H*scale, W*scale]
        s = self.config.shuffle
        if s == 1:
            return self.model(x)
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (-w) % s, 0, (-h) % s), mode="reflect")
        out = self.model(F.pixel_unshuffle(x, s))
        return out[..., : h * self.config.scale, : w * self.config.scale]


def load_upscaler(sd: Mapping[str, object]) -> RRDBNet:
    """Build an RRDBNet from any supported ESRGAN-family state dict."""
    weights = to_old_layout(unwrap_state_dict(sd))
    if any(".conv1x1." in k for k in weights):
        raise ValueError("ESRGAN+ (1×1 dense-block convs) upscale models are not supported")
    net = RRDBNet(RRDBConfig.from_state_dict(weights))
    net.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)
    return net.eval()


def _feather(length: int, f: int) -> Tensor:
    """1-D tile weight: ones with both ends ramped by (t+1)/f over f samples (mirrored at the end)."""
    w = torch.ones(length)
    n = min(f, length)
    if n:
        ramp = (torch.arange(f, dtype=torch.float32) + 1) / f
        w[:n] *= ramp[:n]
        w[length - n:] *= ramp.flip(0)[f - n:]
    return w


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    return sorted({max(0, min(size - overlap, s)) for s in range(0, max(size - overlap, 1), tile - overlap)})


@torch.no_grad()
def upscale_image(net: RRDBNet, image: Tensor, *, tile: int = 512, overlap: int = 32,
                  on_tile: Callable[[int, int], None] | None = None) -> Tensor:
    """Upscale IMAGE `[B,H,W,C]` in feathered tiles (checkpoints.md §11.4); halves the tile on OOM."""
    while True:
        try:
            return _upscale_tiled(net, image, tile, overlap, on_tile)
        except torch.OutOfMemoryError:
            if tile // 2 < 128:
                raise
            tile //= 2


def _upscale_tiled(net: RRDBNet, image: Tensor, tile: int, overlap: int,
                   on_tile: Callable[[int, int], None] | None) -> Tensor:
    scale = net.config.scale
    param = next(net.parameters())
    x = image.movedim(-1, 1).to(param.device, param.dtype)  # [B, C, H, W]
    b, c, h, w = x.shape
    if h <= tile and w <= tile:
        if on_tile:
            on_tile(1, 1)
        return net(x).float().clamp(0, 1).movedim(1, -1).cpu()
    f = round(overlap * scale)
    ys, xs = _tile_starts(h, tile, overlap), _tile_starts(w, tile, overlap)
    out = torch.zeros(b, net.config.out_nc, h * scale, w * scale)
    weight = torch.zeros(1, 1, h * scale, w * scale)
    total, done = len(ys) * len(xs), 0
    for y0 in ys:
        for x0 in xs:
            th, tw = min(tile, h - y0), min(tile, w - x0)
            piece = net(x[..., y0:y0 + th, x0:x0 + tw]).float().cpu()
            mask = _feather(piece.shape[-2], f)[:, None] * _feather(piece.shape[-1], f)[None, :]
            oy, ox = round(y0 * scale), round(x0 * scale)
            out[..., oy:oy + piece.shape[-2], ox:ox + piece.shape[-1]] += piece * mask
            weight[..., oy:oy + piece.shape[-2], ox:ox + piece.shape[-1]] += mask
            done += 1
            if on_tile:
                on_tile(done, total)
    return (out / weight).clamp(0, 1).movedim(1, -1)
