"""What the demo add-on trainers (LoRA, ControlNet) share: the frozen base, command line, metadata, batch indices.

Everything about the base (UNet config, text encoder width, VAE) is read from the checkpoint itself, so
the add-ons retrain unchanged on a new base. They noise their batches with `train_unet`'s `Noiser`
(tools/train_demo.py): epsilon targets on the DDPM schedule that Kiln samples with.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from torch import Tensor

from diffusion.loading import load_checkpoint
from diffusion.models.text_encoders import ClipTextEncoder
from diffusion.models.unet import UNetModel
from diffusion.tokenizer import ClipTokenizer
from tools.demo_data import Scene, caption_of
from tools.train_demo import SCALE_FACTOR, tokenize

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "models" / "checkpoints" / "kiln-demo-shapes.safetensors"


@dataclass
class Base:
    """The base checkpoint as float32 training modules: UNet and text encoder frozen, VAE for encoding."""

    unet: UNetModel
    unet_config: dict
    encoder: ClipTextEncoder
    vae: object  # diffusion.vae_handle.VAEHandle
    tokenizer: ClipTokenizer
    file_sha: str  # what the add-on was trained on, recorded in its metadata
    training_config: dict

    def latents(self, images: np.ndarray) -> Tensor:
        """uint8 [N, 64, 64, 3] → scaled latents (what the UNet sees), through the base VAE's encoder."""
        return self.vae.encode(torch.from_numpy(images).float() / 255) * SCALE_FACTOR

    @torch.no_grad()
    def context(self, said: list[dict]) -> Tensor:
        """Text-encoder outputs [B, 77, D] for descriptions (as `describe` makes them; {} = empty prompt)."""
        return self.encoder(tokenize(self.tokenizer, [caption_of(s) for s in said]))[0]


def load_base(path: Path = BASE) -> Base:
    """Reads the base checkpoint through Kiln's ordinary loader and makes float32 copies to train against."""
    model, clip, vae = load_checkpoint(str(path))
    unet = UNetModel(**model.config)
    unet.load_state_dict({k: v.float() for k, v in model.unet.state_dict().items()})
    encoder = copy.deepcopy(clip.encoders["clip_l"]).float()
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    sha = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return Base(unet.eval().requires_grad_(False), dict(model.config), encoder.eval().requires_grad_(False), vae,
                ClipTokenizer(), sha, json.loads(meta.get("kiln.training_config", "{}")))


def addon_parser(description: str, out: Path, config: dict) -> argparse.ArgumentParser:
    """The options every add-on trainer takes: base checkpoint, output file, seed, steps, torch threads."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--base", default=str(BASE))
    parser.add_argument("--out", default=str(out))
    parser.add_argument("--seed", type=int, default=config["seed"])
    parser.add_argument("--steps", type=int, default=config["steps"])
    parser.add_argument("--threads", type=int, default=2)
    return parser


def start_addon(args: argparse.Namespace, config: dict) -> tuple[dict, Base, torch.Generator, random.Random]:
    """An add-on run's config (seed and steps from the command line), its RNG streams and the frozen base."""
    cfg = config | {"seed": args.seed, "steps": args.steps}
    torch.set_num_threads(args.threads)
    gen, rng = seeded(cfg["seed"])
    return cfg, load_base(Path(args.base)), gen, rng


def addon_metadata(cfg: dict, base: Base, args: argparse.Namespace, minutes: float, recipe: str) -> dict:
    """The safetensors metadata every add-on records: its config, its base, how long and how it was trained."""
    return {"kiln.training_config": json.dumps(cfg), "kiln.base_sha256_16": base.file_sha,
            "kiln.training_minutes": f"{minutes:.1f}", "kiln.threads": str(args.threads), "kiln.recipe": recipe}


def seeded(seed: int) -> tuple[torch.Generator, random.Random]:
    """The two RNG streams of a run (tensors, captions), and torch's global seed for module init."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed), random.Random(seed)


def scene_batch(scenes: list[Scene], gen: torch.Generator, batch: int) -> list[int]:
    """Indices of one training batch."""
    return torch.randint(0, len(scenes), (batch,), generator=gen).tolist()
