"""ControlNet / T2I-Adapter loader and apply nodes (nodes.md §5.1, §5.2; checkpoints.md §7)."""

from __future__ import annotations

from typing import Annotated

from diffusion import loading
from diffusion.controlnet import apply_control
from engine.schema import Combo, Float, NodeContext, Output, Socket, files_in, node


@node("ControlNetLoader", category="loaders", display_name="Load ControlNet Model",
      outputs=[Output("CONTROL_NET")],
      description="Loads a ControlNet or T2I-Adapter (original or diffusers layout).")
def controlnet_loader(ctx: NodeContext, control_net_name: Annotated[str, Combo(files_in("controlnet"))]):
    """A loaded control model; an unrecognised file is an error that says what it looked like."""
    try:
        return loading.load_controlnet(ctx.paths.full_path("controlnet", control_net_name), config=ctx.config)
    except ValueError as err:
        raise RuntimeError(f"{control_net_name} is not a ControlNet or T2I-Adapter: {err}") from err


@node("DiffControlNetLoader", category="loaders", display_name="Load ControlNet Model (diff)",
      outputs=[Output("CONTROL_NET")],
      description="Loads a ControlNet for a given model (diff ControlNets are refused with a clear error).")
def diff_controlnet_loader(
    ctx: NodeContext,
    model: Annotated[object, Socket("MODEL")],
    control_net_name: Annotated[str, Combo(files_in("controlnet"))],
):
    """Plain ControlNet files load as with ControlNetLoader."""
    return controlnet_loader(ctx, control_net_name)


_STRENGTH = Float(default=1.0, min=0.0, max=10.0, step=0.01)


@node("ControlNetApply", category="conditioning/controlnet", display_name="Apply ControlNet (OLD)",
      outputs=[Output("CONDITIONING")], deprecated=True,
      description="Attaches a ControlNet to one conditioning; the negative prompt gets it too.")
def controlnet_apply(
    conditioning: Annotated[list, Socket("CONDITIONING")],
    control_net: Annotated[object, Socket("CONTROL_NET")],
    image: Annotated[object, Socket("IMAGE")],
    strength: Annotated[float, _STRENGTH],
):
    """Strength 0 returns the conditioning unchanged."""
    if strength == 0:
        return conditioning
    return apply_control(conditioning, control_net, image.movedim(-1, 1), strength, 0.0, 1.0, {},
                         extra={"control_apply_to_uncond": True})


@node("ControlNetApplyAdvanced", category="conditioning/controlnet", display_name="Apply ControlNet",
      outputs=[Output("CONDITIONING", name="positive"), Output("CONDITIONING", name="negative")],
      description="Attaches a ControlNet to positive and negative conditioning for part of the schedule.")
def controlnet_apply_advanced(
    positive: Annotated[list, Socket("CONDITIONING")],
    negative: Annotated[list, Socket("CONDITIONING")],
    control_net: Annotated[object, Socket("CONTROL_NET")],
    image: Annotated[object, Socket("IMAGE")],
    strength: Annotated[float, _STRENGTH],
    start_percent: Annotated[float, Float(default=0.0, min=0.0, max=1.0, step=0.001)],
    end_percent: Annotated[float, Float(default=1.0, min=0.0, max=1.0, step=0.001)],
    vae: Annotated[object, Socket("VAE", optional=True)] = None,
):
    """Strength 0 returns both unchanged; entries that shared a previous ControlNet share the new one."""
    if strength == 0:
        return positive, negative
    shared: dict = {}
    hint = image.movedim(-1, 1)
    return (apply_control(positive, control_net, hint, strength, start_percent, end_percent, shared),
            apply_control(negative, control_net, hint, strength, start_percent, end_percent, shared))
