"""Trains the demo ControlNet "edges": a white outline on black (tools/demo_data.edge_map) says where the shape goes.

Usage: `python tools/train_demo_controlnet.py [--base ...] [--out models/controlnet/kiln-demo-edges.safetensors]`.
As in the ControlNet paper (Zhang et al. 2023), the control encoder starts as a copy of the base UNet's
encoder, its zero convolutions start at zero, and only it is trained while the base UNet stays frozen.
Captions mostly leave the position out, so the hint has to carry it. The residuals enter the UNet
unscaled, as `diffusion.controlnet.AppliedControl` feeds them at strength 1. The file is in the original
"cldm" layout (`control_model.` keys) that Kiln's ordinary ControlNetLoader detects. It also writes the
hint picture the shipped ControlNet workflow loads. Deterministic from `--seed` (for a given `--threads`);
losses are JSON lines. The shipped file came from `--threads 1` in 10.1 min on this 2-core CPU while the
LoRA trainer held the other core (0.7 s per step of 32).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from diffusion.models.controlnet import ControlNet  # noqa: E402
from diffusion.models.unet import UNetModel  # noqa: E402
from tools.demo_data import Scene, describe, edge_map, make_dataset  # noqa: E402
from tools.demo_finetune import addon_metadata, addon_parser, scene_batch, start_addon  # noqa: E402
from tools.train_demo import LossLog, Noiser, log, optimise, warmup_cosine  # noqa: E402

CONFIG: dict = {
    "seed": 0, "images": 3000, "steps": 900, "batch": 32, "lr": 1e-3, "warmup": 30,
    "caption_dropout": 0.1, "position_dropout": 0.8,
    # Up-weights high noise, where the layout is decided (as train_unet's `loss_weight_cap`).
    "loss_weight_cap": 20.0,
}
# The shipped workflow's hint: a star in the top right, prompted without a position.
WORKFLOW_HINT = Scene("star", "red", "white", "large", "top right", 42.0, 22.0, 17.0)


def control_from_base(unet: UNetModel, config: dict) -> ControlNet:
    """A ControlNet shaped like the base UNet whose encoder is a copy of the UNet's, with zeroed output convs."""
    net = ControlNet(hint_channels=3, **config)
    encoder = {k: v for k, v in unet.state_dict().items() if k.startswith(("time_embed.", "input_blocks.",
                                                                           "middle_block."))}
    missing, unexpected = net.load_state_dict(encoder, strict=False)
    assert not unexpected and all(k.startswith(("input_hint_block.", "zero_convs.", "middle_block_out."))
                                  for k in missing), missing
    for conv in [*net.zero_convs, net.middle_block_out]:
        nn.init.zeros_(conv[0].weight)
        nn.init.zeros_(conv[0].bias)
    return net.float().train()


def hints(scenes: list[Scene]) -> Tensor:
    """Edge maps as the control hint: float [N, 3, 64, 64] 0..1 (what LoadImage + ControlNetApply pass)."""
    return torch.from_numpy(np.stack([edge_map(s) for s in scenes])).permute(0, 3, 1, 2).float() / 255


def captions(scenes: list[Scene], idx: list[int], rng, cfg: dict) -> list[dict]:
    """Partial descriptions that usually leave out the position; some are the empty prompt (CFG's negative)."""
    said = []
    for i in idx:
        if rng.random() < cfg["caption_dropout"]:
            said.append({})
            continue
        d = describe(scenes[i], rng)
        if rng.random() < cfg["position_dropout"]:
            d.pop("position", None)
        said.append(d)
    return said


def cldm_state(net: ControlNet) -> dict[str, Tensor]:
    """The original layout: every tensor under `control_model.`, stored fp16."""
    return {f"control_model.{k}": v.detach().half().contiguous() for k, v in net.state_dict().items()}


def main(argv: list[str] | None = None) -> None:
    parser = addon_parser(__doc__.splitlines()[0], ROOT / "models/controlnet/kiln-demo-edges.safetensors", CONFIG)
    parser.add_argument("--hint-out", default=str(ROOT / "input/kiln-demo-edges.png"))
    args = parser.parse_args(argv)
    started = time.time()
    cfg, base, gen, rng = start_addon(args, CONFIG)
    images, scenes = make_dataset(cfg["images"], seed=cfg["seed"] + 300)
    x_all, hint_all = base.latents(images), hints(scenes)
    log("data", images=len(images), seconds=time.time() - started)

    unet = base.unet
    net = control_from_base(unet, base.unet_config)
    params = list(net.parameters())
    opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=0.0)
    sched = warmup_cosine(opt, cfg["warmup"], cfg["steps"])
    noiser, losses = Noiser(gen), LossLog("controlnet", started=started)
    for step in range(cfg["steps"]):
        idx = scene_batch(scenes, gen, cfg["batch"])
        context = base.context(captions(scenes, idx, rng, cfg))
        xt, t, noise = noiser(x_all[idx])
        control = net(xt, hint_all[idx], t, context)
        weight = noiser.weight(t, cfg["loss_weight_cap"])
        loss = (weight * (unet(xt, t, context, control=control) - noise) ** 2).mean() / weight.mean()
        losses.add(step, optimise(opt, sched, loss, clip=params))

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    minutes = (time.time() - started) / 60
    metadata = {
        "modelspec.title": "Kiln demo edges", "modelspec.architecture": "stable-diffusion-v1/controlnet",
        "kiln.hint": "white shape outline on black (tools/demo_data.edge_map)",
        **addon_metadata(cfg, base, args, minutes, "tools/train_demo_controlnet.py"),
    }
    save_file(cldm_state(net), str(out), metadata=metadata)
    hint_out = Path(args.hint_out)
    hint_out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(edge_map(WORKFLOW_HINT)).save(hint_out)
    log("saved", path=str(out), megabytes=out.stat().st_size / 2**20, hint=str(hint_out), minutes=minutes)


if __name__ == "__main__":
    main()
