"""Image, latent and mask math behind the core nodes: resampling, crops, filters, composites (torch only)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

UPSCALE_METHODS_LATENT = ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]
UPSCALE_METHODS_IMAGE = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
BLEND_MODES = ["normal", "multiply", "screen", "overlay", "soft_light", "difference"]


# ----------------------------------------------------------------------------------------------
# Resampling  (channels-first tensors [B, C, H, W])


def center_crop_to_aspect(x: Tensor, width: int, height: int) -> Tensor:
    """Crop the centre of ``x`` [B,C,H,W] to the aspect ratio ``width/height``."""
    old_h, old_w = x.shape[-2], x.shape[-1]
    old_aspect, new_aspect = old_w / old_h, width / height
    dx = dy = 0
    if old_aspect > new_aspect:
        dx = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        dy = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
    return x[..., dy:old_h - dy, dx:old_w - dx]


def resize(x: Tensor, width: int, height: int, method: str, crop: str = "disabled") -> Tensor:
    """Resize ``x`` [B,C,H,W] to ``height``×``width`` with one of ComfyUI's upscale methods."""
    if crop == "center":
        x = center_crop_to_aspect(x, width, height)
    if method == "bislerp":
        return bislerp(x, width, height)
    if method == "lanczos":
        return lanczos(x, width, height)
    if method not in ("nearest-exact", "bilinear", "area", "bicubic"):
        raise ValueError(f"unknown upscale method {method!r}")
    return F.interpolate(x, size=(height, width), mode=method)


def _source_coords(n_in: int, n_out: int, device) -> tuple[Tensor, Tensor, Tensor]:
    """Half-pixel-centred source indices (low, high) and fractional weights for a 1-D resize."""
    pos = ((torch.arange(n_out, device=device, dtype=torch.float64) + 0.5) * n_in / n_out - 0.5)
    pos = pos.clamp(0, n_in - 1)
    low = pos.floor().long()
    high = (low + 1).clamp(max=n_in - 1)
    return low, high, (pos - low).float()


def _slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation of the channel vectors (dim 1) of ``a`` and ``b``; magnitudes lerp."""
    na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    ua, ub = a / na.clamp_min(1e-12), b / nb.clamp_min(1e-12)
    dot = (ua * ub).sum(dim=1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    safe = so.abs() > 1e-6
    wa = torch.where(safe, torch.sin((1 - t) * omega) / torch.where(safe, so, torch.ones_like(so)), 1 - t)
    wb = torch.where(safe, torch.sin(t * omega) / torch.where(safe, so, torch.ones_like(so)), t)
    direction = wa * ua + wb * ub
    return direction * (na * (1 - t) + nb * t)


def bislerp(x: Tensor, width: int, height: int) -> Tensor:
    """Separable bilinear resize that slerps channel vectors instead of lerping them (latents)."""
    x = x.float()
    lo, hi, t = _source_coords(x.shape[-1], width, x.device)
    x = _slerp(x[..., lo], x[..., hi], t.view(1, 1, 1, -1))
    lo, hi, t = _source_coords(x.shape[-2], height, x.device)
    return _slerp(x[..., lo, :], x[..., hi, :], t.view(1, 1, -1, 1))


def _lanczos_weights(n_in: int, n_out: int, a: int = 3) -> Tensor:
    """Dense [n_out, n_in] Lanczos-``a`` resampling matrix, widened when downscaling (antialias)."""
    scale = n_in / n_out
    support = a * max(scale, 1.0)
    centers = (torch.arange(n_out, dtype=torch.float64) + 0.5) * scale
    src = torch.arange(n_in, dtype=torch.float64) + 0.5
    d = (src[None, :] - centers[:, None]) / max(scale, 1.0)
    w = torch.sinc(d) * torch.sinc(d / a)
    w = torch.where(d.abs() < a, w, torch.zeros_like(w))
    w = torch.where((src[None, :] - centers[:, None]).abs() <= support, w, torch.zeros_like(w))
    return (w / w.sum(dim=1, keepdim=True)).float()


def lanczos(x: Tensor, width: int, height: int) -> Tensor:
    """Separable Lanczos-3 resize (antialiased when shrinking), clamped to the input's range."""
    wy = _lanczos_weights(x.shape[-2], height).to(x.device)
    wx = _lanczos_weights(x.shape[-1], width).to(x.device)
    out = torch.einsum("oh,bchw,pw->bcop", wy, x.float(), wx)
    return out.clamp(x.min(), x.max())


def scaled_size(in_w: int, in_h: int, width: int, height: int, minimum: int = 1) -> tuple[int, int]:
    """Target size where 0 on one side keeps the aspect ratio; each side at least ``minimum``."""
    if width == 0:
        height = max(minimum, height)
        width = max(minimum, round(in_w * height / in_h))
    elif height == 0:
        width = max(minimum, width)
        height = max(minimum, round(in_h * width / in_w))
    else:
        width, height = max(minimum, width), max(minimum, height)
    return width, height


def crop_to_multiple(x: Tensor, multiple: int = 8) -> Tensor:
    """Centre-crop the last two axes of ``x`` to multiples of ``multiple`` (offset ``(size % m)//2``)."""
    h, w = x.shape[-2], x.shape[-1]
    nh, nw = (h // multiple) * multiple, (w // multiple) * multiple
    oh, ow = (h % multiple) // 2, (w % multiple) // 2
    return x[..., oh:oh + nh, ow:ow + nw]


def crop_image_to_multiple(image: Tensor, multiple: int = 8) -> Tensor:
    """``crop_to_multiple`` for a channels-last IMAGE [B,H,W,C]."""
    return crop_to_multiple(image.movedim(-1, 1), multiple).movedim(1, -1)


def resize_image(image: Tensor, width: int, height: int, method: str, crop: str = "disabled") -> Tensor:
    """``resize`` for a channels-last IMAGE [B,H,W,C]."""
    return resize(image.movedim(-1, 1), width, height, method, crop).movedim(1, -1)


def repeat_to_batch(x: Tensor, batch: int) -> Tensor:
    """Repeat (or truncate) the batch axis of ``x`` to ``batch`` entries."""
    if x.shape[0] == batch:
        return x
    reps = math.ceil(batch / x.shape[0])
    return x.repeat((reps,) + (1,) * (x.dim() - 1))[:batch]


# ----------------------------------------------------------------------------------------------
# Filters  (channels-last IMAGE [B,H,W,C])


def gaussian_kernel(size: int, sigma: float) -> Tensor:
    """Normalised 2-D Gaussian of ``size``×``size`` taps sampled on the grid [-1, 1]."""
    g = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(g, g, indexing="ij")
    k = torch.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    return k / k.sum()


def _depthwise(x: Tensor, kernel: Tensor, padding_mode: str = "reflect") -> Tensor:
    """Convolve every channel of ``x`` [B,C,H,W] with the same odd-sized 2-D ``kernel``."""
    c = x.shape[1]
    pad = kernel.shape[-1] // 2
    xp = F.pad(x, (pad, pad, pad, pad), mode=padding_mode)
    return F.conv2d(xp, kernel.to(x)[None, None].repeat(c, 1, 1, 1), groups=c)


def blur(image: Tensor, radius: int, sigma: float) -> Tensor:
    """Gaussian blur with a ``2·radius+1`` kernel, reflect padding."""
    kernel = gaussian_kernel(2 * radius + 1, sigma)
    return _depthwise(image.movedim(-1, 1), kernel).movedim(1, -1)


def sharpen(image: Tensor, radius: int, sigma: float, alpha: float) -> Tensor:
    """Unsharp mask: ``x + 10·alpha·(x − blur(x))`` clamped to 0..1 (ComfyUI's kernel form)."""
    blurred = blur(image, radius, sigma)
    return (image + 10.0 * alpha * (image - blurred)).clamp(0, 1)


def blend(image1: Tensor, image2: Tensor, factor: float, mode: str) -> Tensor:
    """``image1·(1−f) + mode(image1, image2)·f`` clamped; image2 is fitted to image1 (bicubic, centre)."""
    if image1.shape != image2.shape:
        image2 = resize_image(image2, image1.shape[2], image1.shape[1], "bicubic", "center")
    a, b = image1, image2
    if mode == "normal":
        mixed = b
    elif mode == "multiply":
        mixed = a * b
    elif mode == "screen":
        mixed = 1 - (1 - a) * (1 - b)
    elif mode == "overlay":
        mixed = torch.where(a <= 0.5, 2 * a * b, 1 - 2 * (1 - a) * (1 - b))
    elif mode == "soft_light":
        g = torch.where(a <= 0.25, ((16 * a - 12) * a + 4) * a, torch.sqrt(a))
        mixed = torch.where(b <= 0.5, a - (1 - 2 * b) * a * (1 - a), a + (2 * b - 1) * (g - a))
    elif mode == "difference":
        mixed = a - b
    else:
        raise ValueError(f"unknown blend mode {mode!r}")
    return (a * (1 - factor) + mixed * factor).clamp(0, 1)


def luminance(image: Tensor) -> Tensor:
    """Rec. 601 luma of an RGB IMAGE [B,H,W,3] → [B,H,W]."""
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    return 0.299 * r + 0.587 * g + 0.114 * b


def canny(image: Tensor, low: float, high: float) -> Tensor:
    """Canny edges of the luminance (5×5 σ=1 smoothing, Sobel, non-maximum suppression, hysteresis) → [B,H,W] 0/1."""
    gray = luminance(image)[:, None]                                    # [B,1,H,W]
    g = torch.arange(5, dtype=torch.float32) - 2
    g = torch.exp(-(g**2) / 2)
    smooth = _depthwise(gray, torch.outer(g, g) / torch.outer(g, g).sum())
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])  # unnormalised, as kornia's canny
    gx = _depthwise(smooth, sobel, "replicate")
    gy = _depthwise(smooth, sobel.T, "replicate")
    mag = torch.sqrt(gx**2 + gy**2 + 1e-6)
    # gradient direction quantised to 0/45/90/135 degrees (tan 22.5° splits the sectors);
    # a pixel survives when it is a maximum against both neighbours along that direction
    ax, ay, tan = gx.abs(), gy.abs(), math.tan(math.pi / 8)
    horizontal, vertical = ay <= tan * ax, ax <= tan * ay
    rising = ~horizontal & ~vertical & (gx * gy > 0)
    sectors = [(horizontal, 0, 1), (rising, 1, 1), (vertical, 1, 0),
               (~horizontal & ~vertical & ~rising, 1, -1)]
    padded = F.pad(mag, (1, 1, 1, 1))
    h, w = mag.shape[-2:]
    keep = torch.zeros_like(mag, dtype=torch.bool)
    for in_sector, dy, dx in sectors:
        fwd = padded[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
        bwd = padded[..., 1 - dy:1 - dy + h, 1 - dx:1 - dx + w]
        keep |= in_sector & (mag >= fwd) & (mag >= bwd)
    weak = keep & (mag > low)
    strong = keep & (mag > high)
    count = int(strong.sum())
    while True:  # grow strong edges through 8-connected weak pixels until stable
        strong = strong | (weak & (F.max_pool2d(strong.float(), 3, stride=1, padding=1) > 0))
        new_count = int(strong.sum())
        if new_count == count:
            return strong[:, 0].float()
        count = new_count


# ----------------------------------------------------------------------------------------------
# Masks  ([B,H,W])


def as_mask_batch(mask: Tensor) -> Tensor:
    """A MASK of any of [H,W], [B,H,W], [B,1,H,W] as [B,H,W]."""
    return mask.reshape(-1, mask.shape[-2], mask.shape[-1])


def grow_mask(mask: Tensor, expand: int, tapered_corners: bool) -> Tensor:
    """Grey dilation (expand > 0) or erosion (< 0) repeated |expand| times with a 3×3 cross or square."""
    m = as_mask_batch(mask).float()[:, None]
    shifts = [(0, 0), (0, 1), (0, -1), (1, 0), (-1, 0)]
    if not tapered_corners:
        shifts += [(1, 1), (1, -1), (-1, 1), (-1, -1)]
    grow = expand > 0
    fill = float("-inf") if grow else float("inf")
    h, w = m.shape[-2:]
    for _ in range(abs(expand)):
        p = F.pad(m, (1, 1, 1, 1), value=fill)
        stack = torch.stack([p[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy, dx in shifts])
        m = stack.amax(0) if grow else stack.amin(0)
    return m[:, 0]


def feather_mask(mask: Tensor, left: int, top: int, right: int, bottom: int) -> Tensor:
    """Multiply the mask by linear ramps ``(i+1)/n`` over the ``n`` pixels next to each edge."""
    out = as_mask_batch(mask).clone().float()
    h, w = out.shape[-2:]

    def ramp(n: int, size: int) -> Tensor:
        r = torch.ones(size)
        n = min(n, size)
        if n > 0:
            r[:n] = (torch.arange(n, dtype=torch.float32) + 1) / n
        return r

    out *= ramp(left, w)[None, None, :] * ramp(right, w).flip(0)[None, None, :]
    out *= ramp(top, h)[None, :, None] * ramp(bottom, h).flip(0)[None, :, None]
    return out


def pad_for_outpaint(image: Tensor, left: int, top: int, right: int, bottom: int,
                     feathering: int) -> tuple[Tensor, Tensor]:
    """Pad with 0.5 gray; mask is 1 in the new area, 0 inside, with a quadratic feather inward."""
    b, h, w, c = image.shape
    out = torch.full((b, h + top + bottom, w + left + right, c), 0.5, dtype=image.dtype)
    out[:, top:top + h, left:left + w] = image
    mask = torch.ones(h + top + bottom, w + left + right)
    inner = torch.zeros(h, w)
    if feathering > 0 and feathering * 2 < h and feathering * 2 < w:
        i = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
        j = torch.arange(w, dtype=torch.float32)[None, :].expand(h, w)
        far_h, far_w = torch.full_like(i, h), torch.full_like(j, w)
        d = torch.minimum(
            torch.minimum(i if top else far_h, (h - i) if bottom else far_h),
            torch.minimum(j if left else far_w, (w - j) if right else far_w))
        v = (feathering - d) / feathering
        inner = torch.where(d < feathering, v * v, inner)
    mask[top:top + h, left:left + w] = inner
    return out, mask[None]


# ----------------------------------------------------------------------------------------------
# Composites  (channels-first [B,C,H,W])


def paste_feathered(dest: Tensor, src: Tensor, x: int, y: int, feather: int) -> Tensor:
    """Paste ``src`` into a copy of ``dest`` at (x, y), truncated; linear ramps on edges inside ``dest``."""
    out = dest.clone()
    src = src[..., :dest.shape[-2] - y, :dest.shape[-1] - x]
    sh, sw = src.shape[-2:]
    mask = torch.ones(sh, sw, dtype=dest.dtype, device=dest.device)
    if feather > 0:
        ramp = lambda n: torch.clamp((torch.arange(n, dtype=dest.dtype) + 1) / feather, max=1.0)
        if y != 0:
            mask *= ramp(sh)[:, None]
        if y + sh < dest.shape[-2]:
            mask *= ramp(sh).flip(0)[:, None]
        if x != 0:
            mask *= ramp(sw)[None, :]
        if x + sw < dest.shape[-1]:
            mask *= ramp(sw).flip(0)[None, :]
    region = out[..., y:y + sh, x:x + sw]
    out[..., y:y + sh, x:x + sw] = src * mask + region * (1 - mask)
    return out


def paste_masked(dest: Tensor, src: Tensor, x: int, y: int, mask: Tensor | None = None,
                 resize_source: bool = False) -> Tensor:
    """Paste ``src`` into a copy of ``dest`` at (x, y) through ``mask`` (resized to ``src``), truncated."""
    out = dest.clone()
    if resize_source:
        src = F.interpolate(src, size=dest.shape[-2:], mode="bilinear")
    src = repeat_to_batch(src, dest.shape[0])
    if mask is None:
        m = torch.ones_like(src)
    else:
        m = F.interpolate(mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).to(src),
                          size=src.shape[-2:], mode="bilinear")
        m = repeat_to_batch(m, src.shape[0])
    vh, vw = max(0, dest.shape[-2] - y), max(0, dest.shape[-1] - x)
    src, m = src[..., :vh, :vw], m[..., :vh, :vw]
    sh, sw = src.shape[-2:]
    region = out[..., y:y + sh, x:x + sw]
    out[..., y:y + sh, x:x + sw] = m * src + (1 - m) * region
    return out


# ----------------------------------------------------------------------------------------------
# Inpainting preparation (sampling.md §7.4)


def inpaint_crop(pixels: Tensor, mask: Tensor, multiple: int = 8) -> tuple[Tensor, Tensor]:
    """Pixels [B,H,W,C] and the mask resized (bilinear) to them, both centre-cropped to multiples of 8.

    Returns (pixels [B,H',W',C], mask [B,1,H',W']).
    """
    h, w = pixels.shape[1], pixels.shape[2]
    m = F.interpolate(mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float(), size=(h, w),
                      mode="bilinear")
    return crop_image_to_multiple(pixels, multiple), crop_to_multiple(m, multiple)


def gray_fill(pixels: Tensor, mask: Tensor) -> Tensor:
    """Masked pixels (``round(mask)`` = 1) set to exactly 0.5; mask [B,1,H,W], pixels [B,H,W,C]."""
    keep = 1.0 - mask.round().movedim(1, -1)
    return (pixels - 0.5) * keep + 0.5


def grow_box(mask: Tensor, grow: int) -> Tensor:
    """``round(mask)`` grown with a ``grow``×``grow`` box of ones, clamped, cropped back and rounded."""
    h, w = mask.shape[-2:]
    if grow <= 0:
        return mask.round()
    pad = math.ceil((grow - 1) / 2)
    kernel = torch.ones(1, 1, grow, grow, dtype=mask.dtype, device=mask.device)
    grown = F.conv2d(mask.round(), kernel, padding=pad).clamp(0, 1)
    return grown[..., :h, :w].round()
