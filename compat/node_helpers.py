"""ComfyUI's `node_helpers`: tolerant image opening and the hash factory."""
from __future__ import annotations

import hashlib


def pillow(fn, arg):
    """Call a PIL function, retrying with truncated-image loading enabled when the file is cut short."""
    from PIL import Image, ImageFile

    prev = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        return fn(arg)
    except (OSError, SyntaxError, Image.DecompressionBombError):
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            return fn(arg)
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = prev


def hasher():
    """The hash constructor used for file fingerprints (sha256)."""
    return hashlib.sha256
