"""Scores the bundled demo model and prints them as one JSON object.

Usage: `python bench/demo_quality.py [--n 100] [--images docs/images]`. Measures prompt following
(colour / shape / background accuracy over n prompts at CFG 5 and CFG 1), the effect of a colour as
negative prompt, img2img layout keeping at denoise 0.3, inpainting locality, generation speed, and the demo
LoRA's outline score (strength 0 vs 1) and the demo ControlNet's placement IoU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors import safe_open  # noqa: E402

from tools.demo_pipeline import (DEMO_CHECKPOINT, DEMO_CONTROLNET, DEMO_HINT, DEMO_LORA,  # noqa: E402
                                 controlnet_placement, img2img_layout, inpaint_locality, load_demo, lora_style,
                                 negative_colour, prompt_following, sample, sample_controlled, with_lora)

SHOWCASE = ["a yellow star on a blue background, center", "a large red ring on a white background, top left",
            "a small green triangle on a black background, bottom right", "a purple square on a yellow background"]
LORA_SHOWCASE = "orange circle on a gray background"  # after the trigger word
CONTROLNET_SHOWCASE = "a red star on a white background"  # no position: the edge map decides


def _save(images: list[np.ndarray], path: Path) -> str:
    """Pictures side by side, upscaled 4x (nearest) so they read well in the README."""
    strip = np.concatenate(images, axis=1)
    Image.fromarray(strip).resize((strip.shape[1] * 4, strip.shape[0] * 4), Image.Resampling.NEAREST).save(path)
    return path.name


def save_showcase(model, clip, vae, folder: Path) -> list[str]:
    """A few generated pictures, the LoRA at strength 0 and 1, and a ControlNet hint beside its picture."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [_save([sample(model, clip, vae, [prompt], seed=i, steps=20)[0]], folder / f"demo-{i + 1}.png")
             for i, prompt in enumerate(SHOWCASE)]
    prompt = [f"an outlined {LORA_SHOWCASE}"]
    names.append(_save([sample(*with_lora(model, clip, strength), vae, prompt, seed=0, steps=20)[0]
                        for strength in (0.0, 1.0)], folder / "demo-lora.png"))
    hint = np.asarray(Image.open(DEMO_HINT).convert("RGB"))
    names.append(_save([hint, sample_controlled(model, clip, vae, CONTROLNET_SHOWCASE, hint, seed=0, steps=20)],
                       folder / "demo-controlnet.png"))
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="prompts for the prompt-following score")
    parser.add_argument("--images", default=None, help="also save showcase PNGs into this folder")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.time()
    model, clip, vae = load_demo()
    load_s = time.time() - started
    with safe_open(str(DEMO_CHECKPOINT), "pt") as f:
        meta = f.metadata()
    t = time.time()
    sample(model, clip, vae, ["a red circle on a white background"], steps=20)
    one_image_s = time.time() - t
    result = {
        "checkpoint_mb": round(DEMO_CHECKPOINT.stat().st_size / 2**20, 2),
        "training_minutes": float(meta.get("kiln.training_minutes", "nan")),
        "load_seconds": round(load_s, 2),
        "one_image_20_steps_seconds": round(one_image_s, 2),
        "cfg5": prompt_following(model, clip, vae, cfg=5.0, n=args.n),
        "cfg1": prompt_following(model, clip, vae, cfg=1.0, n=args.n),
        "negative_red": negative_colour(model, clip, vae),
        "img2img_denoise_0.3": img2img_layout(model, clip, vae),
        "inpaint_mean_abs_change": inpaint_locality(model, clip, vae),
        "lora_mb": round(DEMO_LORA.stat().st_size / 2**20, 2),
        "lora_outline_score": lora_style(model, clip, vae, n=40),
        "controlnet_mb": round(DEMO_CONTROLNET.stat().st_size / 2**20, 2),
        "controlnet_placement": controlnet_placement(model, clip, vae, n=40),
    }
    if args.images:
        result["showcase"] = save_showcase(model, clip, vae, ROOT / args.images)
    result["seconds"] = round(time.time() - started, 1)
    print(json.dumps(result, default=lambda v: float(v) if isinstance(v, np.floating) else str(v)))


if __name__ == "__main__":
    main()
