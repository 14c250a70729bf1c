"""Trains the demo LoRA "outlined": a trigger word that draws a dark (or light) outline around the shape.

Usage: `python tools/train_demo_lora.py [--base ...] [--out models/loras/kiln-demo-outlined.safetensors]`.
Low-rank adapters on the base UNet's attention, feed-forward, projection and ResBlock layers learn from
outlined pictures captioned with "outlined" mixed with plain pictures captioned without it, so the word
switches the style. The base stays frozen and the file uses kohya names (`lora_unet_<module path>`),
which Kiln's ordinary LoraLoader matches. Deterministic from `--seed` (for a given `--threads`); losses are
JSON lines on stdout. The shipped file came from `--threads 1` in 7.5 min on this 2-core CPU while the
ControlNet trainer held the other core (0.75 s per step of 48).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.nn.utils import parametrize

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from diffusion.models import Conv2d, Linear  # noqa: E402
from tools.demo_data import describe, make_dataset  # noqa: E402
from tools.demo_finetune import addon_metadata, addon_parser, scene_batch, start_addon  # noqa: E402
from tools.train_demo import LossLog, Noiser, log, optimise, warmup_cosine  # noqa: E402

TRIGGER = "outlined"
CONFIG: dict = {
    "seed": 0, "images_per_style": 1500, "rank": 8, "alpha": 8.0, "steps": 600, "batch": 48, "lr": 3e-3,
    "warmup": 30, "caption_dropout": 0.1,
    # module path endings that get an adapter (LDM names, as in the checkpoint)
    "targets": ["attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k",
                "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out",
                "in_layers.2", "out_layers.3"],
}


class LowRank(nn.Module):
    """W → W + (alpha/r)·up·down: the same sum Kiln's LoRA patch adds when the file is loaded at strength 1.

    `down` has the layer's input shape ([r, in] or [r, in, kh, kw]), `up` is [out, r(, 1, 1)] and starts
    at zero, so training begins from the base model exactly.
    """

    def __init__(self, weight: Tensor, rank: int, alpha: float):
        super().__init__()
        fan_in = weight[0].numel()
        self.down = nn.Parameter(torch.randn(rank, *weight.shape[1:]) / math.sqrt(fan_in))
        self.up = nn.Parameter(torch.zeros(weight.shape[0], rank, *[1] * (weight.dim() - 2)))
        self.alpha, self.scale = alpha, alpha / rank

    def forward(self, weight: Tensor) -> Tensor:
        return weight + self.scale * (self.up.flatten(1) @ self.down.flatten(1)).reshape(weight.shape)


def add_adapters(unet: nn.Module, targets: list[str], rank: int, alpha: float) -> dict[str, LowRank]:
    """Parametrizes the weight of every Linear/Conv2d whose path ends with a target; returns path → adapter."""
    adapters = {}
    for path, module in list(unet.named_modules()):
        if isinstance(module, (Linear, Conv2d)) and path.endswith(tuple(targets)):
            adapters[path] = LowRank(module.weight, rank, alpha)
            parametrize.register_parametrization(module, "weight", adapters[path])
    return adapters


def kohya_state(adapters: dict[str, LowRank]) -> dict[str, Tensor]:
    """`lora_unet_<path with _>.lora_down.weight` / `.lora_up.weight` / `.alpha`, stored fp16."""
    sd = {}
    for path, a in adapters.items():
        name = "lora_unet_" + path.replace(".", "_")
        sd[f"{name}.lora_down.weight"] = a.down.detach().half().contiguous()
        sd[f"{name}.lora_up.weight"] = a.up.detach().half().contiguous()
        sd[f"{name}.alpha"] = torch.tensor(a.alpha, dtype=torch.float16)
    return sd


def training_data(n: int, seed: int) -> tuple[np.ndarray, list]:
    """n outlined and n plain pictures (different scenes) with their ground truth."""
    outlined, o_scenes = make_dataset(n, seed=seed + 100, outlined=True)
    plain, p_scenes = make_dataset(n, seed=seed + 200)
    return np.concatenate([outlined, plain]), o_scenes + p_scenes


def captions(scenes: list, idx: list[int], rng, dropout: float) -> list[dict]:
    """Descriptions of a batch: outlined scenes always name the trigger word and a shape; plain ones may be empty."""
    said = []
    for i in idx:
        s = scenes[i]
        if s.outlined:
            d = describe(s, rng)
            said.append(d if "shape" in d else describe(s))  # the bare-colour form would drop the trigger
        else:
            said.append({} if rng.random() < dropout else describe(s, rng))
    return said


def main(argv: list[str] | None = None) -> None:
    parser = addon_parser(__doc__.splitlines()[0], ROOT / "models/loras/kiln-demo-outlined.safetensors", CONFIG)
    args = parser.parse_args(argv)
    started = time.time()
    cfg, base, gen, rng = start_addon(args, CONFIG)
    images, scenes = training_data(cfg["images_per_style"], cfg["seed"])
    x_all = base.latents(images)
    log("data", images=len(images), seconds=time.time() - started)

    unet = base.unet
    adapters = add_adapters(unet, cfg["targets"], cfg["rank"], cfg["alpha"])
    params = [p for a in adapters.values() for p in a.parameters()]
    log("adapters", layers=len(adapters), parameters=sum(p.numel() for p in params))
    opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=0.0)
    sched = warmup_cosine(opt, cfg["warmup"], cfg["steps"])
    noiser, losses = Noiser(gen), LossLog("lora", started=started)
    for step in range(cfg["steps"]):
        idx = scene_batch(scenes, gen, cfg["batch"])
        context = base.context(captions(scenes, idx, rng, cfg["caption_dropout"]))
        xt, t, noise = noiser(x_all[idx])
        loss = ((unet(xt, t, context) - noise) ** 2).mean()
        losses.add(step, optimise(opt, sched, loss, clip=params))

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    minutes = (time.time() - started) / 60
    metadata = {
        "modelspec.title": "Kiln demo outlined", "modelspec.architecture": "stable-diffusion-v1/lora",
        "ss_network_dim": str(cfg["rank"]), "ss_network_alpha": str(cfg["alpha"]),
        "modelspec.trigger_phrase": TRIGGER, "kiln.trigger_word": TRIGGER,
        **addon_metadata(cfg, base, args, minutes, "tools/train_demo_lora.py"),
    }
    save_file(kohya_state(adapters), str(out), metadata=metadata)
    log("saved", path=str(out), kilobytes=out.stat().st_size / 1024, minutes=minutes)


if __name__ == "__main__":
    main()
