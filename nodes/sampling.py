"""Sampling nodes: KSampler, KSamplerAdvanced and the custom-sampling building blocks (nodes.md §5.3)."""

from __future__ import annotations

from typing import Annotated, Any

import torch
from PIL import Image, ImageOps

from diffusion.sampling import schedules
from diffusion.sampling.ksampler import (NonFiniteLatent, SamplerChoice, ksampler, model_sampling_for,
                                         sample_latent)
from diffusion.sampling.samplers import SAMPLER_NAMES, UnsupportedSampler
from engine.schema import Boolean, Combo, Float, Int, NodeContext, Output, Socket, node

SEED_MAX = 0xFFFFFFFFFFFFFFFF


def _progress(ctx: NodeContext, model: Any):
    """on_step callback: progress + Latent2RGB preview of the denoised estimate, interrupt check."""
    method = getattr(ctx.config, "preview_method", "none")
    size = getattr(ctx.config, "preview_size", 512)
    fmt = model.latent_format

    def on_step(step: int, total: int, x: torch.Tensor, denoised: torch.Tensor) -> None:
        preview = None
        if method in ("latent2rgb", "auto"):
            pixels = fmt.preview_bytes(denoised[0].detach().cpu()).numpy()
            image = ImageOps.contain(Image.fromarray(pixels), (size, size), Image.BILINEAR)
            preview = ("JPEG", image, size)
        ctx.progress(min(step + 1, total), total, preview)

    return on_step


def _run(class_type: str, ctx: NodeContext, fn, **kwargs) -> dict:
    """Run a sampling call, turning NaN output and unsupported samplers into errors naming the node."""
    try:
        return fn(**kwargs)
    except NonFiniteLatent as exc:
        raise RuntimeError(f"{class_type} (node {ctx.node_id}): {exc}; the model, its weights or "
                           f"the precision produced NaNs — try another sampler, cfg or fp32") from exc
    except UnsupportedSampler as exc:
        raise ValueError(f"{class_type} (node {ctx.node_id}): {exc}") from exc


@node("KSampler", category="sampling", display_name="KSampler",
      outputs=[Output("LATENT", tooltip="the denoised latent")],
      description="Denoises a latent with a model, prompts and a seed.")
def k_sampler(
    model: Annotated[Any, Socket("MODEL", tooltip="diffusion model that denoises")],
    seed: Annotated[int, Int(default=0, min=0, max=SEED_MAX, control_after_generate=True,
                             tooltip="seed of the initial noise")],
    steps: Annotated[int, Int(default=20, min=1, max=10000, tooltip="number of denoising steps")],
    cfg: Annotated[float, Float(default=8.0, min=0.0, max=100.0, step=0.1, round=0.01,
                                tooltip="classifier-free guidance scale; higher follows the prompt "
                                        "more, too high hurts quality")],
    sampler_name: Annotated[str, Combo(SAMPLER_NAMES, tooltip="sampling algorithm")],
    scheduler: Annotated[str, Combo(schedules.SCHEDULER_NAMES,
                                    tooltip="how the noise level decreases over the steps")],
    positive: Annotated[list, Socket("CONDITIONING", tooltip="conditioning to steer towards")],
    negative: Annotated[list, Socket("CONDITIONING", tooltip="conditioning to steer away from")],
    latent_image: Annotated[dict, Socket("LATENT", tooltip="latent to denoise")],
    denoise: Annotated[float, Float(default=1.0, min=0.0, max=1.0, step=0.01,
                                    tooltip="fraction of the schedule to run; below 1 keeps the "
                                            "input structure (img2img)")],
    ctx: NodeContext,
):
    """Full KSampler: always adds noise; denoise < 1 runs the tail of a longer schedule."""
    return _run("KSampler", ctx, ksampler, model=model, seed=seed, steps=steps, cfg=cfg,
                sampler_name=sampler_name, scheduler=scheduler, positive=positive,
                negative=negative, latent=latent_image, denoise=denoise,
                on_step=_progress(ctx, model))


@node("KSamplerAdvanced", category="sampling", display_name="KSampler (Advanced)",
      outputs=[Output("LATENT")])
def k_sampler_advanced(
    model: Annotated[Any, Socket("MODEL")],
    add_noise: Annotated[str, Combo(["enable", "disable"])],
    noise_seed: Annotated[int, Int(default=0, min=0, max=SEED_MAX, control_after_generate=True)],
    steps: Annotated[int, Int(default=20, min=1, max=10000)],
    cfg: Annotated[float, Float(default=8.0, min=0.0, max=100.0, step=0.1, round=0.01)],
    sampler_name: Annotated[str, Combo(SAMPLER_NAMES)],
    scheduler: Annotated[str, Combo(schedules.SCHEDULER_NAMES)],
    positive: Annotated[list, Socket("CONDITIONING")],
    negative: Annotated[list, Socket("CONDITIONING")],
    latent_image: Annotated[dict, Socket("LATENT")],
    start_at_step: Annotated[int, Int(default=0, min=0, max=10000)],
    end_at_step: Annotated[int, Int(default=10000, min=0, max=10000)],
    return_with_leftover_noise: Annotated[str, Combo(["disable", "enable"])],
    ctx: NodeContext,
):
    """KSampler over steps [start_at_step, end_at_step), optionally without initial noise."""
    return _run("KSamplerAdvanced", ctx, ksampler, model=model, seed=noise_seed, steps=steps,
                cfg=cfg, sampler_name=sampler_name, scheduler=scheduler, positive=positive,
                negative=negative, latent=latent_image, denoise=1.0,
                disable_noise=add_noise == "disable", start_step=start_at_step,
                last_step=end_at_step,
                force_full_denoise=return_with_leftover_noise == "disable",
                on_step=_progress(ctx, model))


@node("KSamplerSelect", category="sampling/custom_sampling/samplers", display_name="KSamplerSelect",
      python_module="comfy_extras.nodes_custom_sampler", v3=True, outputs=[Output("SAMPLER")])
def k_sampler_select(
    sampler_name: Annotated[str, Combo(SAMPLER_NAMES, style="combo")],
):
    """The sampler object for `sampler_name`."""
    return SamplerChoice(sampler_name)


@node("BasicScheduler", category="sampling/custom_sampling/schedulers", display_name="BasicScheduler",
      python_module="comfy_extras.nodes_custom_sampler", v3=True, outputs=[Output("SIGMAS")])
def basic_scheduler(
    model: Annotated[Any, Socket("MODEL")],
    scheduler: Annotated[str, Combo(schedules.SCHEDULER_NAMES, style="combo")],
    steps: Annotated[int, Int(default=20, min=1, max=10000)],
    denoise: Annotated[float, Float(default=1.0, min=0.0, max=1.0, step=0.01)],
):
    """Sigmas for the scheduler; denoise < 1 keeps the tail of int(steps/denoise) steps."""
    return schedules.ksampler_sigmas(model_sampling_for(model).schedule, scheduler, steps,
                                     denoise=denoise)


@node("SDTurboScheduler", category="sampling/custom_sampling/schedulers",
      display_name="SDTurboScheduler", python_module="comfy_extras.nodes_custom_sampler", v3=True,
      outputs=[Output("SIGMAS")])
def sd_turbo_scheduler(
    model: Annotated[Any, Socket("MODEL")],
    steps: Annotated[int, Int(default=1, min=1, max=10)],
    denoise: Annotated[float, Float(default=1.0, min=0, max=1.0, step=0.01)],
):
    """SD-Turbo sigmas: timesteps 999, 899, … then 0."""
    return schedules.sd_turbo_sigmas(model_sampling_for(model).schedule, steps, denoise)


@node("SamplerCustom", category="sampling/custom_sampling", display_name="SamplerCustom",
      python_module="comfy_extras.nodes_custom_sampler", v3=True,
      outputs=[Output("LATENT", "output"), Output("LATENT", "denoised_output")])
def sampler_custom(
    model: Annotated[Any, Socket("MODEL")],
    add_noise: Annotated[bool, Boolean(default=True)],
    noise_seed: Annotated[int, Int(default=0, min=0, max=SEED_MAX, control_after_generate=True)],
    cfg: Annotated[float, Float(default=8.0, min=0.0, max=100.0, step=0.1, round=0.01)],
    positive: Annotated[list, Socket("CONDITIONING")],
    negative: Annotated[list, Socket("CONDITIONING")],
    sampler: Annotated[SamplerChoice, Socket("SAMPLER")],
    sigmas: Annotated[torch.Tensor, Socket("SIGMAS")],
    latent_image: Annotated[dict, Socket("LATENT")],
    ctx: NodeContext,
):
    """Sample with an explicit sampler and sigmas; also returns the last denoised estimate."""
    last: dict[str, torch.Tensor] = {}
    report = _progress(ctx, model)

    def on_step(step: int, total: int, x: torch.Tensor, denoised: torch.Tensor) -> None:
        last["denoised"] = denoised
        report(step, total, x, denoised)

    out = _run("SamplerCustom", ctx, sample_latent, model=model, seed=noise_seed, cfg=cfg,
               sampler_name=sampler.name, sigmas=sigmas, positive=positive, negative=negative,
               latent=latent_image, add_noise=add_noise, on_step=on_step)
    denoised_out = dict(out)
    if "denoised" in last:
        denoised_out["samples"] = model.latent_format.process_out(last["denoised"].float()).cpu()
    return out, denoised_out
