"""Image nodes: load, save, preview, resize, crop, pad, blend, filters (nodes.md §4, §5.5)."""

from __future__ import annotations

import hashlib
import json
import math
import mimetypes
import os
import random
import time
from typing import Annotated

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence
from PIL.PngImagePlugin import PngInfo

from diffusion import image_ops
from engine.errors import PathEscape
from engine.schema import (MAX_RESOLUTION, Combo, Float, Hidden, Int, NodeContext, NodeOutput,
                           Output, Socket, String, node)

MAX_SIDE = 16384
MAX_PIXELS = 16384 * 16384
MAX_FRAMES = 4096
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow's bomb check raises beyond 2x this instead of warning

# ----------------------------------------------------------------------------------------------
# Files: naming of saved outputs (nodes.md §4.1) and resolution of input images (§4.3)


def save_image_path(ctx: NodeContext, root: str, prefix: str, width: int, height: int
                    ) -> tuple[str, str, int, str]:
    """(folder, filename, first counter, subfolder) for ``prefix`` under ``root`` (SaveImage naming)."""
    if "%" in prefix:
        now = time.localtime()
        for key, value in (("%width%", str(width)), ("%height%", str(height)),
                           ("%year%", str(now.tm_year)), ("%month%", f"{now.tm_mon:02d}"),
                           ("%day%", f"{now.tm_mday:02d}"), ("%hour%", f"{now.tm_hour:02d}"),
                           ("%minute%", f"{now.tm_min:02d}"), ("%second%", f"{now.tm_sec:02d}")):
            prefix = prefix.replace(key, value)
    prefix = os.path.normpath(prefix).replace(os.sep, "/")
    subfolder, filename = os.path.dirname(prefix), os.path.basename(prefix)
    try:
        folder = ctx.paths.contained(root, subfolder)
    except PathEscape:
        raise PathEscape(f"saving outside the output folder is not allowed: {prefix!r}") from None
    counter = 1
    if os.path.isdir(folder):
        stem = filename + "_"
        numbers = []
        for entry in os.listdir(folder):
            if entry[:len(stem)] == stem:
                try:
                    numbers.append(int(entry[len(stem):].split("_")[0]))
                except ValueError:
                    numbers.append(0)
        counter = max(numbers, default=0) + 1
    else:
        os.makedirs(folder, exist_ok=True)
    return folder, filename, counter, subfolder


def png_metadata(ctx: NodeContext, prompt: dict | None, extra_pnginfo: dict | None) -> PngInfo | None:
    """The `prompt` and extra_pnginfo `tEXt` chunks (ASCII JSON), or None with --disable-metadata."""
    if ctx.config.disable_metadata:
        return None
    info = PngInfo()
    if prompt is not None:
        info.add_text("prompt", json.dumps(prompt))
    for key, value in (extra_pnginfo or {}).items():
        info.add_text(key, json.dumps(value))
    return info


def to_pil(image: torch.Tensor) -> Image.Image:
    """One IMAGE [H,W,C] → PIL (``255·x`` clipped and truncated to uint8; RGB or RGBA)."""
    array = np.clip(255.0 * image.cpu().float().numpy(), 0, 255).astype(np.uint8)
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def save_images(ctx: NodeContext, images: torch.Tensor, prefix: str, area: str, compress_level: int,
                prompt: dict | None, extra_pnginfo: dict | None) -> NodeOutput:
    """Write each batch image as a PNG into the output/temp area; the UI lists them."""
    root = ctx.paths.area_dir(area)
    folder, filename, counter, subfolder = save_image_path(
        ctx, root, prefix, images.shape[2], images.shape[1])
    info = png_metadata(ctx, prompt, extra_pnginfo)
    results = []
    for b, image in enumerate(images):
        name = f"{filename.replace('%batch_num%', str(b))}_{counter:05}_.png"
        to_pil(image).save(os.path.join(folder, name), pnginfo=info, compress_level=compress_level)
        results.append({"filename": name, "subfolder": subfolder, "type": area})
        counter += 1
    return NodeOutput(ui={"images": results})


def _is_image_name(name: str) -> bool:
    mime = mimetypes.guess_type(name)[0]
    return name.lower().endswith(".webp") or (mime is not None and mime.startswith("image/"))


def input_files(paths, images_only: bool) -> list[str]:
    """Sorted names of the regular files directly in the input folder (optionally images only)."""
    folder = paths.input_dir
    if not os.path.isdir(folder):
        return []
    names = [n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n))]
    return sorted(n for n in names if not images_only or _is_image_name(n))


def resolve_input(ctx: NodeContext, name: str) -> str:
    """Realpath of an input-image name (``sub/x.png``, ``x.png [output]``); ValueError if unusable."""
    area = "input"
    for tag in ("input", "output", "temp"):
        if name.endswith(f" [{tag}]"):
            name, area = name[:-len(tag) - 3], tag
            break
    try:
        path = ctx.paths.contained(ctx.paths.area_dir(area), name)
    except PathEscape:
        path = None
    if path is None or not os.path.isfile(path):
        raise ValueError("Invalid image file")
    return path


def validate_image(ctx: NodeContext, image: str) -> bool | str:
    """VALIDATE_INPUTS of LoadImage / LoadImageMask: the file exists inside its folder."""
    try:
        resolve_input(ctx, image)
    except ValueError:
        return f"Invalid image file: {image}"
    return True


def image_hash(ctx: NodeContext, image: str, **_) -> str:
    """IS_CHANGED of LoadImage / LoadImageMask: SHA-256 of the file bytes."""
    digest = hashlib.sha256()
    with open(resolve_input(ctx, image), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def open_image(path: str) -> Image.Image:
    """Open lazily and refuse sizes beyond the decode limits before any pixel is decoded."""
    img = Image.open(path)
    w, h = img.size
    if w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
        raise ValueError(f"image too large: {w}x{h} exceeds the decode limit of {MAX_SIDE} px per "
                         f"side and {MAX_PIXELS} pixels")
    return img


def _scale_16_bit(img: Image.Image) -> Image.Image:
    """32/16-bit integer grayscale (``I``, ``I;16``…) scaled by 1/255, as ComfyUI does for mode I."""
    if img.mode == "I" or img.mode.startswith("I;16"):
        return img.convert("I").point(lambda v: v * (1 / 255))
    return img


def decode_image(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """IMAGE [N,H,W,3] and MASK [N,H,W] (1 − alpha; 64×64 zeros without alpha) of every same-size frame."""
    img = open_image(path)
    images, masks, size = [], [], None
    for index, frame in enumerate(ImageSequence.Iterator(img)):
        if index >= MAX_FRAMES:
            raise ValueError(f"too many frames in {os.path.basename(path)} (limit {MAX_FRAMES})")
        frame = _scale_16_bit(ImageOps.exif_transpose(frame))
        rgb = frame.convert("RGB")
        if size is None:
            size = rgb.size
        elif rgb.size != size:
            continue
        images.append(torch.from_numpy(np.array(rgb).astype(np.float32) / 255.0))
        if "A" in frame.getbands():
            alpha = np.array(frame.getchannel("A")).astype(np.float32) / 255.0
            masks.append(1.0 - torch.from_numpy(alpha))
        elif frame.mode == "P" and "transparency" in frame.info:
            alpha = np.array(frame.convert("RGBA").getchannel("A")).astype(np.float32) / 255.0
            masks.append(1.0 - torch.from_numpy(alpha))
        else:
            masks.append(torch.zeros(64, 64))
        if img.format == "MPO":
            break
    return torch.stack(images), torch.stack(masks)


def decode_mask(path: str, channel: str) -> torch.Tensor:
    """One channel of the file (converted to RGBA) as MASK [1,H,W]; alpha is inverted."""
    img = ImageOps.exif_transpose(open_image(path))
    if img.getbands() != ("R", "G", "B", "A"):
        img = _scale_16_bit(img).convert("RGBA")
    band = channel[0].upper()
    if band not in img.getbands():
        return torch.zeros(1, 64, 64)
    mask = torch.from_numpy(np.array(img.getchannel(band)).astype(np.float32) / 255.0)
    return (1.0 - mask if band == "A" else mask)[None]


# ----------------------------------------------------------------------------------------------
# Nodes


@node("LoadImage", category="image", display_name="Load Image",
      outputs=[Output("IMAGE"), Output("MASK")],
      is_changed=image_hash, validate_inputs=validate_image,
      description="Loads an image from the input folder; the mask is the inverted alpha channel.")
def load_image(
    ctx: NodeContext,
    image: Annotated[str, Combo(lambda paths: input_files(paths, images_only=True), image_upload=True)],
):
    """Decode the file (EXIF orientation, frames as batch) into IMAGE and MASK."""
    return decode_image(resolve_input(ctx, image))


@node("LoadImageMask", category="mask", display_name="Load Image (as Mask)",
      outputs=[Output("MASK")], is_changed=image_hash, validate_inputs=validate_image,
      description="Loads one channel of an image file as a mask.")
def load_image_mask(
    ctx: NodeContext,
    image: Annotated[str, Combo(lambda paths: input_files(paths, images_only=False), image_upload=True)],
    channel: Annotated[str, Combo(["alpha", "red", "green", "blue"])],
):
    """One channel as MASK [1,H,W] (alpha inverted)."""
    return decode_mask(resolve_input(ctx, image), channel)


SAVE_DESCRIPTION = "Saves the images as PNG files (with the workflow embedded) into the output folder."


@node("SaveImage", category="image", display_name="Save Image", outputs=[], output_node=True,
      description=SAVE_DESCRIPTION)
def save_image(
    ctx: NodeContext,
    images: Annotated[torch.Tensor, Socket("IMAGE", tooltip="images to save")],
    filename_prefix: Annotated[str, String(
        default="ComfyUI",
        tooltip="file name prefix; may contain subfolders and %date:…% / %Node.widget% patterns")],
    prompt: Annotated[dict, Hidden("PROMPT")] = None,
    extra_pnginfo: Annotated[dict, Hidden("EXTRA_PNGINFO")] = None,
):
    """Write ``<prefix>_<counter:05>_.png`` files with prompt/workflow text chunks."""
    return save_images(ctx, images, filename_prefix, "output", 4, prompt, extra_pnginfo)


_PREVIEW_LETTERS = "abcdefghijklmnopqrstupvxyz"  # ComfyUI's alphabet: 'p' twice, no 'w'
_preview_suffixes: dict[str, str] = {}


@node("PreviewImage", category="image", display_name="Preview Image", outputs=[], output_node=True,
      description=SAVE_DESCRIPTION)  # inherited from SaveImage, as ComfyUI reports it
def preview_image(
    ctx: NodeContext,
    images: Annotated[torch.Tensor, Socket("IMAGE")],
    prompt: Annotated[dict, Hidden("PROMPT")] = None,
    extra_pnginfo: Annotated[dict, Hidden("EXTRA_PNGINFO")] = None,
):
    """Temp-folder PNGs named ``ComfyUI_temp_<5 letters>_…`` (letters fixed per node id)."""
    suffix = _preview_suffixes.setdefault(
        ctx.node_id, "".join(random.SystemRandom().choice(_PREVIEW_LETTERS) for _ in range(5)))
    return save_images(ctx, images, f"ComfyUI_temp_{suffix}", "temp", 1, prompt, extra_pnginfo)


_IMAGE_METHODS = image_ops.UPSCALE_METHODS_IMAGE


@node("ImageScale", category="image/upscaling", display_name="Upscale Image", outputs=[Output("IMAGE")])
def image_scale(
    image: Annotated[torch.Tensor, Socket("IMAGE")],
    upscale_method: Annotated[str, Combo(_IMAGE_METHODS)],
    width: Annotated[int, Int(default=512, min=0, max=MAX_RESOLUTION, step=1)],
    height: Annotated[int, Int(default=512, min=0, max=MAX_RESOLUTION, step=1)],
    crop: Annotated[str, Combo(["disabled", "center"])],
):
    """Resize to width×height (0 on one side keeps the aspect ratio; both 0 → unchanged)."""
    if width == 0 and height == 0:
        return image
    width, height = image_ops.scaled_size(image.shape[2], image.shape[1], width, height)
    return image_ops.resize_image(image, width, height, upscale_method, crop)


@node("ImageScaleBy", category="image/upscaling", display_name="Upscale Image By",
      outputs=[Output("IMAGE")])
def image_scale_by(
    image: Annotated[torch.Tensor, Socket("IMAGE")],
    upscale_method: Annotated[str, Combo(_IMAGE_METHODS)],
    scale_by: Annotated[float, Float(default=1.0, min=0.01, max=8.0, step=0.01)],
):
    """Resize by ``scale_by`` (rounded sizes)."""
    width, height = round(image.shape[2] * scale_by), round(image.shape[1] * scale_by)
    return image_ops.resize_image(image, max(1, width), max(1, height), upscale_method)


@node("ImageScaleToTotalPixels", category="image/upscaling", display_name="Scale Image to Total Pixels",
      python_module="comfy_extras.nodes_post_processing", v3=True, outputs=[Output("IMAGE")])
def image_scale_to_total_pixels(
    image: Annotated[torch.Tensor, Socket("IMAGE")],
    upscale_method: Annotated[str, Combo(_IMAGE_METHODS, style="combo")],
    megapixels: Annotated[float, Float(default=1.0, min=0.01, max=16.0, step=0.01)],
    resolution_steps: Annotated[int, Int(default=1, min=1, max=256)],
):
    """Resize to about ``megapixels``·2^20 pixels, keeping the aspect ratio; sides rounded to steps."""
    h, w = image.shape[1], image.shape[2]
    scale = math.sqrt(megapixels * 1024 * 1024 / (w * h))
    width = max(resolution_steps, round(w * scale / resolution_steps) * resolution_steps)
    height = max(resolution_steps, round(h * scale / resolution_steps) * resolution_steps)
    return image_ops.resize_image(image, width, height, upscale_method)


@node("ImageInvert", category="image", display_name="Invert Image", outputs=[Output("IMAGE")])
def image_invert(image: Annotated[torch.Tensor, Socket("IMAGE")]):
    """``1 − image``."""
    return 1.0 - image


@node("ImageBatch", category="image", display_name="Batch Images", outputs=[Output("IMAGE")],
      deprecated=True)
def image_batch(
    image1: Annotated[torch.Tensor, Socket("IMAGE")],
    image2: Annotated[torch.Tensor, Socket("IMAGE")],
):
    """Concatenate batches; image2 fitted to image1 (bilinear, centre crop); missing alpha padded with 1."""
    c1, c2 = image1.shape[-1], image2.shape[-1]
    if c1 < c2:
        image1 = torch.cat([image1, torch.ones_like(image1[..., :1]).expand(*image1.shape[:3], c2 - c1)], -1)
    elif c2 < c1:
        image2 = torch.cat([image2, torch.ones_like(image2[..., :1]).expand(*image2.shape[:3], c1 - c2)], -1)
    if image1.shape[1:3] != image2.shape[1:3]:
        image2 = image_ops.resize_image(image2, image1.shape[2], image1.shape[1], "bilinear", "center")
    return torch.cat([image1, image2], dim=0)


@node("ImagePadForOutpaint", category="image", display_name="Pad Image for Outpainting",
      outputs=[Output("IMAGE"), Output("MASK")])
def image_pad_for_outpaint(
    image: Annotated[torch.Tensor, Socket("IMAGE")],
    left: Annotated[int, Int(default=0, min=0, max=MAX_RESOLUTION, step=8)],
    top: Annotated[int, Int(default=0, min=0, max=MAX_RESOLUTION, step=8)],
    right: Annotated[int, Int(default=0, min=0, max=MAX_RESOLUTION, step=8)],
    bottom: Annotated[int, Int(default=0, min=0, max=MAX_RESOLUTION, step=8)],
    feathering: Annotated[int, Int(default=40, min=0, max=MAX_RESOLUTION, step=1)],
):
    """Gray-padded image and the mask of the new area (feathered into the original)."""
    return image_ops.pad_for_outpaint(image, left, top, right, bottom, feathering)


@node("ImageCrop", category="image/transform", display_name="Image Crop",
      python_module="comfy_extras.nodes_images", v3=True, outputs=[Output("IMAGE")])
def image_crop(
    image: Annotated[torch.Tensor, Socket("IMAGE")],
    width: Annotated[int, Int(default=512, min=1, max=MAX_RESOLUTION, step=1)],
    height: Annotated[int, Int(default=512, min=1, max=MAX_RESOLUTION, step=1)],
    x: Annotated[int, Int(default=0, min=0, max=MAX_RESOLUTION, step=1)],
    y: Annotated[int, Int(default=0, min=0, max=MAX_RESOLUTION, step=1)],
):
    """Crop width×height at (x, y), with x/y clamped inside the image."""
    x, y = min(x, image.shape[2] - 1), min(y, image.shape[1] - 1)
    return image[:, y:y + height, x:x + width, :]


@node("ImageBlend", category="image/postprocessing", display_name="Image Blend",
      python_module="comfy_extras.nodes_post_processing", v3=True, outputs=[Output("IMAGE")])
def image_blend(
    image1: Annotated[torch.Tensor, Socket("IMAGE")],
    image2: Annotated[torch.Tensor, Socket("IMAGE")],
    blend_factor: Annotated[float, Float(default=0.5, min=0.0, max=1.0, step=0.01)],
    blend_mode: Annotated[str, Combo(image_ops.BLEND_MODES, style="combo")],
):
    """``image1·(1−f) + mode(image1, image2)·f``, clamped."""
    return image_ops.blend(image1, image2, blend_factor, blend_mode)


@node("ImageBlur", category="image/postprocessing", display_name="Image Blur",
      python_module="comfy_extras.nodes_post_processing", v3=True, outputs=[Output("IMAGE")])
def image_blur(
    image: Annotated[torch.Tensor, Socket("IMAGE")],
    blur_radius: Annotated[int, Int(default=1, min=1, max=31, step=1)],
    sigma: Annotated[float, Float(default=1.0, min=0.1, max=10.0, step=0.1)],
):
    """Gaussian blur."""
    return image_ops.blur(image, blur_radius, sigma)


@node("ImageSharpen", category="image/postprocessing", display_name="Image Sharpen",
      python_module="comfy_extras.nodes_post_processing", v3=True, outputs=[Output("IMAGE")])
def image_sharpen(
    image: Annotated[torch.Tensor, Socket("IMAGE")],
    sharpen_radius: Annotated[int, Int(default=1, min=1, max=31, step=1)],
    sigma: Annotated[float, Float(default=1.0, min=0.1, max=10.0, step=0.01)],
    alpha: Annotated[float, Float(default=1.0, min=0.0, max=5.0, step=0.01)],
):
    """Unsharp-mask sharpening."""
    return image_ops.sharpen(image, sharpen_radius, sigma, alpha)


@node("Canny", category="image/preprocessors", display_name="Canny",
      python_module="comfy_extras.nodes_canny", v3=True, outputs=[Output("IMAGE")])
def canny(
    image: Annotated[torch.Tensor, Socket("IMAGE")],
    low_threshold: Annotated[float, Float(default=0.4, min=0.01, max=0.99, step=0.01)],
    high_threshold: Annotated[float, Float(default=0.8, min=0.01, max=0.99, step=0.01)],
):
    """Canny edges of the luminance as a 3-channel 0/1 image."""
    edges = image_ops.canny(image, low_threshold, high_threshold)
    return edges[..., None].repeat(1, 1, 1, 3)


@node("EmptyImage", category="image", display_name="EmptyImage", outputs=[Output("IMAGE")])
def empty_image(
    width: Annotated[int, Int(default=512, min=1, max=MAX_RESOLUTION, step=1)],
    height: Annotated[int, Int(default=512, min=1, max=MAX_RESOLUTION, step=1)],
    batch_size: Annotated[int, Int(default=1, min=1, max=4096)],
    color: Annotated[int, Int(default=0, min=0, max=0xFFFFFF, step=1, display="color")],
):
    """A batch filled with ``color`` (0xRRGGBB)."""
    rgb = torch.tensor([(color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF]) / 255.0
    return rgb.expand(batch_size, height, width, 3).clone()
