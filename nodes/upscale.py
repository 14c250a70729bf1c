"""Model-based image upscaling: ESRGAN-family loader and tiled upscale (nodes.md §5.1, §5.5)."""

from __future__ import annotations

from typing import Annotated

from diffusion import loading
from diffusion.upscale import RRDBNet, load_upscaler, upscale_image
from engine.schema import Combo, NodeContext, Output, Socket, files_in, node

_MODULE = "comfy_extras.nodes_upscale_model"


@node("UpscaleModelLoader", category="loaders", display_name="Load Upscale Model",
      outputs=[Output("UPSCALE_MODEL")], python_module=_MODULE, v3=True,
      description="Loads an ESRGAN-family super-resolution model from upscale_models.")
def upscale_model_loader(
    ctx: NodeContext,
    model_name: Annotated[str, Combo(files_in("upscale_models"), style="combo")],
) -> RRDBNet:
    """An RRDBNet built from the file's shapes (old, Real-ESRGAN and BSRGAN key layouts)."""
    return load_upscaler(loading.read_state_dict(ctx.paths.full_path("upscale_models", model_name)))


@node("ImageUpscaleWithModel", category="image/upscaling", display_name="Upscale Image (using Model)",
      outputs=[Output("IMAGE")], python_module=_MODULE, v3=True,
      description="Upscales an image with a super-resolution model, in feathered tiles.")
def image_upscale_with_model(
    ctx: NodeContext,
    upscale_model: Annotated[RRDBNet, Socket("UPSCALE_MODEL")],
    image: Annotated[object, Socket("IMAGE")],
):
    """The image at the model's scale; progress is reported per tile."""
    return upscale_image(upscale_model, image, on_tile=lambda done, total: ctx.progress(done, total))
