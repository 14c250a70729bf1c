"""`comfy.comfy_types`: wire type-name constants and annotation-only base classes."""
from __future__ import annotations

from enum import Enum
from typing import Any, TypedDict


class IO(str, Enum):
    """Type names; members compare equal to their strings (`IO.IMAGE == "IMAGE"`)."""

    STRING = "STRING"
    INT = "INT"
    FLOAT = "FLOAT"
    BOOLEAN = "BOOLEAN"
    COMBO = "COMBO"
    ANY = "*"
    NUMBER = "FLOAT,INT"
    PRIMITIVE = "STRING,FLOAT,INT,BOOLEAN"
    IMAGE = "IMAGE"
    MASK = "MASK"
    LATENT = "LATENT"
    CONDITIONING = "CONDITIONING"
    MODEL = "MODEL"
    CLIP = "CLIP"
    VAE = "VAE"
    CONTROL_NET = "CONTROL_NET"
    SAMPLER = "SAMPLER"
    SIGMAS = "SIGMAS"
    NOISE = "NOISE"
    GUIDER = "GUIDER"
    UPSCALE_MODEL = "UPSCALE_MODEL"
    CLIP_VISION = "CLIP_VISION"
    CLIP_VISION_OUTPUT = "CLIP_VISION_OUTPUT"
    STYLE_MODEL = "STYLE_MODEL"
    GLIGEN = "GLIGEN"
    AUDIO = "AUDIO"

    def __str__(self) -> str:
        return self.value

    def __ne__(self, other: object) -> bool:
        if self is IO.ANY or other == "*":
            return False
        return str.__ne__(self.value, other)

    __hash__ = str.__hash__


InputTypeDict = dict[str, Any]


class ComfyNodeABC:
    """Empty base class packs use for annotations."""


class InputTypeOptions(TypedDict, total=False):
    default: Any
    tooltip: str


__all__ = ["IO", "ComfyNodeABC", "InputTypeDict", "InputTypeOptions"]
