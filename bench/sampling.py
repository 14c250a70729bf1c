"""Sampling benchmark: sampler overhead per step vs one SD1.5 UNet step, and SD1.5 steps/s with CFG.

Prints one JSON object per measurement (JSON lines). Random weights are built on the fly, so no
checkpoint is needed:

    .venv/bin/python bench/sampling.py [--device cpu|cuda] [--steps 4] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from diffusion import configs  # noqa: E402
from diffusion.latent_formats import SD15  # noqa: E402
from diffusion.model_handle import ModelHandle  # noqa: E402
from diffusion.models.unet import UNetModel  # noqa: E402
from diffusion.sampling.ksampler import ksampler  # noqa: E402


def random_unet(config: dict, device: str, seed: int = 0) -> UNetModel:
    """A UNet of `config` with small seeded random weights (built on the meta device, then filled)."""
    with torch.device("meta"):
        unet = UNetModel(**config)
    unet = unet.to_empty(device=device)
    gen = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        for p in unet.parameters():
            p.normal_(0.0, 0.02, generator=gen)
        for b in unet.buffers():
            b.zero_()
    return unet.eval()


class InstantUNet(nn.Module):
    """A UNet stand-in that costs nothing, to isolate the sampler's own per-step work."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.compute_dtype = None

    def forward(self, x, timesteps, context, y=None, control=None):
        return x[:, :4] * 0.0


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def handle(unet: nn.Module, config: dict, device: str) -> ModelHandle:
    return ModelHandle(unet, config, "sd1", "eps", SD15, load_device=device)


def conds(device: str, dim: int = 768):
    gen = torch.Generator().manual_seed(1)
    pos = [[torch.randn(1, 77, dim, generator=gen).to(device), {}]]
    neg = [[torch.randn(1, 77, dim, generator=gen).to(device), {}]]
    return pos, neg


def time_ksampler(model: ModelHandle, latent_hw: int, steps: int, sampler: str, device: str,
                  cfg: float = 7.0) -> float:
    """Seconds per step of a full KSampler run (txt2img, CFG batched)."""
    pos, neg = conds(device)
    latent = {"samples": torch.zeros(1, 4, latent_hw, latent_hw)}
    run = dict(seed=0, steps=steps, cfg=cfg, sampler_name=sampler, scheduler="karras",
               positive=pos, negative=neg, latent=latent)
    sync(device)
    t0 = time.perf_counter()
    ksampler(model, **run)
    sync(device)
    return (time.perf_counter() - t0) / steps


def time_unet_step(unet: UNetModel, latent_hw: int, device: str, repeats: int) -> float:
    """Seconds for one CFG-batched UNet call (batch 2) at the given latent size."""
    x = torch.randn(2, 4, latent_hw, latent_hw, device=device)
    ctx = torch.randn(2, 77, 768, device=device)
    t = torch.tensor([500.0, 500.0], device=device)
    with torch.no_grad():
        unet(x, t, ctx)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            unet(x, t, ctx)
        sync(device)
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=4, help="steps of the full-size 256x256 run")
    ap.add_argument("--repeats", type=int, default=2, help="UNet calls averaged for the 64x64 step")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    env = {"device": device, "torch": torch.__version__, "threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(0)

    # Sampler overhead: everything per step except the UNet (conditioning, CFG, scaling, update).
    instant = handle(InstantUNet().to(device), {"in_channels": 4}, device)
    overhead = {}
    for sampler in ("euler", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_sde", "uni_pc"):
        time_ksampler(instant, 64, 3, sampler, device)  # warm-up
        overhead[sampler] = min(time_ksampler(instant, 64, 20, sampler, device) for _ in range(3))

    t0 = time.perf_counter()
    unet = random_unet(configs.SD15, device)
    build_s = time.perf_counter() - t0
    unet_step = time_unet_step(unet, 64, device, args.repeats)
    print(json.dumps({
        "bench": "sampler_overhead", **env, "latent": [64, 64], "cfg_batch": 2,
        "unet_step_s": round(unet_step, 4),
        "overhead_per_step_s": {k: round(v, 6) for k, v in overhead.items()},
        "overhead_pct_of_unet_step": {k: round(100 * v / unet_step, 3) for k, v in overhead.items()},
        "target_pct": 2.0,
        "meets_target": all(100 * v / unet_step <= 2.0 for v in overhead.values()),
    }), flush=True)

    model = handle(unet, configs.SD15, device)
    time_ksampler(model, 32, 1, "euler", device)  # warm-up
    per_step = time_ksampler(model, 32, args.steps, "euler", device)
    print(json.dumps({
        "bench": "sd15_256px_cfg", **env, "latent": [32, 32], "sampler": "euler",
        "scheduler": "karras", "cfg": 7.0, "steps": args.steps, "unet_build_s": round(build_s, 2),
        "s_per_step": round(per_step, 4), "steps_per_s": round(1 / per_step, 4),
    }), flush=True)


if __name__ == "__main__":
    main()
