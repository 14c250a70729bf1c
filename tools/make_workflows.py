"""Writes the shipped editor-format (0.4) workflows in workflows/ from the live node definitions.

Usage: `python tools/make_workflows.py`. Slots, widget order and control values come from
`/object_info`, so the files are what the editor itself would save.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHECKPOINT = "kiln-demo-shapes.safetensors"
LORA = "kiln-demo-outlined.safetensors"
CONTROLNET = "kiln-demo-edges.safetensors"
HINT = "kiln-demo-edges.png"  # committed under input/ (written by tools/train_demo_controlnet.py)
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _ordered_inputs(info: dict) -> list[tuple[str, list]]:
    """(name, spec) of a node's inputs in the order the editor lays them out (workflows.md §3.3)."""
    order = info.get("input_order", {})
    out = []
    for group in ("required", "optional"):
        specs = info["input"].get(group, {})
        names = order.get(group) or list(specs)
        out += [(n, specs[n]) for n in names if n in specs]
    return out


def _is_widget(spec: list) -> bool:
    typ = spec[0]
    opts = spec[1] if len(spec) > 1 else {}
    return (isinstance(typ, list) or typ in WIDGET_TYPES) and not opts.get("forceInput")


class Workflow:
    """A small builder for editor workflows: nodes with widget values, links by input name."""

    def __init__(self, object_info: dict, name: str):
        self.info = object_info
        self.uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"kiln/workflows/{name}"))
        self.nodes: list[dict] = []
        self.links: list[list] = []
        self.groups: list[dict] = []

    def add(self, class_type: str, pos: tuple[int, int], title: str | None = None, **widgets) -> dict:
        """Adds a node; widgets not given take their defaults, seeds get a "fixed" control value."""
        info = self.info[class_type]
        values, inputs = [], []
        for name, spec in _ordered_inputs(info):
            opts = spec[1] if len(spec) > 1 else {}
            if _is_widget(spec):
                if name in widgets:
                    value = widgets.pop(name)
                elif "default" in opts:
                    value = opts["default"]
                else:
                    value = spec[0][0] if isinstance(spec[0], list) and spec[0] else ""
                values.append(value)
                if opts.get("control_after_generate") or (name in ("seed", "noise_seed") and
                                                          "control_after_generate" not in opts):
                    values.append("fixed")
                if opts.get("image_upload"):
                    values.append("image")
            else:
                inputs.append({"name": name, "type": spec[0], "link": None})
        if widgets:
            raise ValueError(f"{class_type} has no widgets {sorted(widgets)}")
        node = {
            "id": len(self.nodes) + 1, "type": class_type, "pos": list(pos), "size": [315, 100], "flags": {},
            "order": len(self.nodes), "mode": 0, "inputs": inputs,
            "outputs": [{"name": n, "type": t, "slot_index": i, "links": []}
                        for i, (t, n) in enumerate(zip(info["output"], info["output_name"]))],
            "properties": {"Node name for S&R": class_type}, "widgets_values": values,
        }
        if title:
            node["title"] = title
        self.nodes.append(node)
        return node

    def note(self, text: str, pos: tuple[int, int]) -> None:
        """A Note node (editor-only; never sent to the server)."""
        self.nodes.append({"id": len(self.nodes) + 1, "type": "Note", "pos": list(pos), "size": [320, 120],
                           "flags": {}, "order": len(self.nodes), "mode": 0, "inputs": [], "outputs": [],
                           "properties": {}, "widgets_values": [text]})

    def link(self, src: dict, slot: int, dst: dict, input_name: str) -> None:
        """Connects output `slot` of `src` to the socket `input_name` of `dst`."""
        link_id = len(self.links) + 1
        target = next(i for i, inp in enumerate(dst["inputs"]) if inp["name"] == input_name)
        dst["inputs"][target]["link"] = link_id
        src["outputs"][slot]["links"].append(link_id)
        self.links.append([link_id, src["id"], slot, dst["id"], target, src["outputs"][slot]["type"]])

    def group(self, title: str, bounding: tuple[int, int, int, int]) -> None:
        """A visual group box."""
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": list(bounding),
                            "color": "#3f789e", "font_size": 24, "flags": {}})

    def to_json(self) -> dict:
        for node in self.nodes:
            for out in node["outputs"]:
                out["links"] = out["links"] or None
        return {"id": self.uuid, "revision": 0, "last_node_id": len(self.nodes), "last_link_id": len(self.links),
                "nodes": self.nodes, "links": self.links, "groups": self.groups, "config": {},
                "extra": {"ds": {"scale": 1, "offset": [0, 0]}}, "version": 0.4}


def _txt2img(wf: Workflow, prompt: str, negative: str = "", *, batch: int = 1, seed: int = 42,
             steps: int = 20, cfg: float = 5.0, size: int = 64, y: int = 0) -> tuple[dict, dict, dict]:
    """Checkpoint → prompts → KSampler → VAE Decode; returns (checkpoint, sampler, decode) nodes."""
    ckpt = wf.add("CheckpointLoaderSimple", (20, 200 + y), ckpt_name=CHECKPOINT)
    pos = wf.add("CLIPTextEncode", (400, 40 + y), title="Positive prompt", text=prompt)
    neg = wf.add("CLIPTextEncode", (400, 260 + y), title="Negative prompt", text=negative)
    latent = wf.add("EmptyLatentImage", (400, 480 + y), width=size, height=size, batch_size=batch)
    ks = wf.add("KSampler", (800, 120 + y), seed=seed, steps=steps, cfg=cfg, sampler_name="euler",
                scheduler="normal", denoise=1.0)
    dec = wf.add("VAEDecode", (1160, 120 + y))
    wf.link(ckpt, 0, ks, "model")
    wf.link(ckpt, 1, pos, "clip")
    wf.link(ckpt, 1, neg, "clip")
    wf.link(pos, 0, ks, "positive")
    wf.link(neg, 0, ks, "negative")
    wf.link(latent, 0, ks, "latent_image")
    wf.link(ks, 0, dec, "samples")
    wf.link(ckpt, 2, dec, "vae")
    return ckpt, ks, dec


def default(oi: dict) -> dict:
    """Text to image with the bundled demo model: the workflow the editor opens first."""
    wf = Workflow(oi, "default")
    _, _, dec = _txt2img(wf, "a yellow star on a blue background, center", batch=4)
    save = wf.add("SaveImage", (1400, 120), filename_prefix="kiln-demo")
    wf.link(dec, 0, save, "images")
    wf.note("Kiln's bundled demo model draws one coloured shape (circle, square, triangle, star, ring) on a "
            "plain background at 64x64. Try: 'a large red ring on a white background, top left'.", (20, 20))
    return wf.to_json()


def _second_pass(wf: Workflow, ckpt: dict, prompt: str, latent: dict, *, denoise: float, seed: int = 7,
                 negative: str = "", steps: int = 20, x: int = 800, y: int = 700) -> dict:
    """A second KSampler over `latent` with its own prompt; returns its VAE Decode node."""
    pos = wf.add("CLIPTextEncode", (400, y), title="Positive prompt (second pass)", text=prompt)
    neg = wf.add("CLIPTextEncode", (400, y + 220), title="Negative prompt (second pass)", text=negative)
    ks = wf.add("KSampler", (x, y), seed=seed, steps=steps, cfg=5.0, sampler_name="euler",
                scheduler="normal", denoise=denoise)
    dec = wf.add("VAEDecode", (x + 360, y))
    wf.link(ckpt, 0, ks, "model")
    wf.link(ckpt, 1, pos, "clip")
    wf.link(ckpt, 1, neg, "clip")
    wf.link(pos, 0, ks, "positive")
    wf.link(neg, 0, ks, "negative")
    wf.link(latent, 0, ks, "latent_image")
    wf.link(ks, 0, dec, "samples")
    wf.link(ckpt, 2, dec, "vae")
    return dec


def img2img(oi: dict) -> dict:
    """Image to image: a source picture is encoded and re-sampled at denoise 0.6 under a new prompt."""
    wf = Workflow(oi, "img2img")
    ckpt, _, src = _txt2img(wf, "a red circle on a white background, top left", seed=3)
    preview = wf.add("PreviewImage", (1400, 120), title="Source image")
    enc = wf.add("VAEEncode", (1400, 400))
    wf.link(src, 0, preview, "images")
    wf.link(src, 0, enc, "pixels")
    wf.link(ckpt, 2, enc, "vae")
    dec = _second_pass(wf, ckpt, "a blue circle on a white background, top left", enc, denoise=0.6)
    save = wf.add("SaveImage", (1600, 700), filename_prefix="kiln-img2img")
    wf.link(dec, 0, save, "images")
    wf.note("The source comes from a first text-to-image pass so this runs out of the box; replace it with a "
            "Load Image node to start from your own picture. Lower denoise keeps more of the source.", (20, 20))
    return wf.to_json()


def inpainting(oi: dict) -> dict:
    """Inpainting by noise mask: only the masked centre square of the source is re-sampled."""
    wf = Workflow(oi, "inpainting")
    ckpt, _, src = _txt2img(wf, "a green square on a gray background, center", seed=5)
    preview = wf.add("PreviewImage", (1400, 120), title="Source image")
    wf.link(src, 0, preview, "images")
    # Centre mask: a 32x32 hole padded by 16 px on each side (pad = 1), inverted so the centre is 1.
    hole = wf.add("SolidMask", (20, 1000), value=0.0, width=32, height=32)
    as_image = wf.add("MaskToImage", (20, 1140))
    pad = wf.add("ImagePadForOutpaint", (20, 1240), left=16, top=16, right=16, bottom=16, feathering=0)
    centre = wf.add("InvertMask", (400, 1240), title="Mask: centre square")
    wf.link(hole, 0, as_image, "mask")
    wf.link(as_image, 0, pad, "image")
    wf.link(pad, 1, centre, "mask")
    enc = wf.add("VAEEncode", (1400, 400))
    wf.link(src, 0, enc, "pixels")
    wf.link(ckpt, 2, enc, "vae")
    masked = wf.add("SetLatentNoiseMask", (1400, 560))
    wf.link(enc, 0, masked, "samples")
    wf.link(centre, 0, masked, "mask")
    dec = _second_pass(wf, ckpt, "a red star on a gray background, center", masked, denoise=1.0)
    save = wf.add("SaveImage", (1600, 700), filename_prefix="kiln-inpaint")
    wf.link(dec, 0, save, "images")
    wf.note("Set Latent Noise Mask keeps every latent pixel outside the mask and re-samples the inside with "
            "the second prompt. Use Load Image (its MASK output) to paint your own mask.", (20, 20))
    return wf.to_json()


def hires_fix(oi: dict) -> dict:
    """Hires fix: sample at 64x64, upscale the latent 2x, then refine at denoise 0.5."""
    wf = Workflow(oi, "hires_fix")
    prompt = "a purple triangle on a yellow background, center"
    ckpt, ks, low = _txt2img(wf, prompt, seed=11)
    preview = wf.add("PreviewImage", (1400, 120), title="First pass (64x64)")
    wf.link(low, 0, preview, "images")
    up = wf.add("LatentUpscaleBy", (1400, 400), upscale_method="bislerp", scale_by=2.0)
    wf.link(ks, 0, up, "samples")
    dec = _second_pass(wf, ckpt, prompt, up, denoise=0.5)
    save = wf.add("SaveImage", (1600, 700), filename_prefix="kiln-hires")
    wf.link(dec, 0, save, "images")
    return wf.to_json()


def _prompts(wf: Workflow, clip: tuple[dict, int], prompt: str, negative: str = "") -> tuple[dict, dict]:
    """Positive and negative CLIPTextEncode nodes fed from output `clip` = (node, slot)."""
    pos = wf.add("CLIPTextEncode", (400, 40), title="Positive prompt", text=prompt)
    neg = wf.add("CLIPTextEncode", (400, 260), title="Negative prompt", text=negative)
    wf.link(*clip, pos, "clip")
    wf.link(*clip, neg, "clip")
    return pos, neg


def _sample_and_save(wf: Workflow, model: tuple[dict, int], positive: tuple[dict, int],
                     negative: tuple[dict, int], vae: tuple[dict, int], prefix: str, *, batch: int, seed: int,
                     x: int = 800) -> None:
    """Empty latent → KSampler (euler, 20 steps, CFG 5) → VAE Decode → Save Image."""
    latent = wf.add("EmptyLatentImage", (400, 480), width=64, height=64, batch_size=batch)
    ks = wf.add("KSampler", (x, 120), seed=seed, steps=20, cfg=5.0, sampler_name="euler", scheduler="normal",
                denoise=1.0)
    dec = wf.add("VAEDecode", (x + 360, 120))
    save = wf.add("SaveImage", (x + 600, 120), filename_prefix=prefix)
    wf.link(*model, ks, "model")
    wf.link(*positive, ks, "positive")
    wf.link(*negative, ks, "negative")
    wf.link(latent, 0, ks, "latent_image")
    wf.link(ks, 0, dec, "samples")
    wf.link(*vae, dec, "vae")
    wf.link(dec, 0, save, "images")


def lora(oi: dict) -> dict:
    """LoRA: the demo "outlined" style LoRA patches model and text encoder; its trigger word is in the prompt."""
    wf = Workflow(oi, "lora")
    ckpt = wf.add("CheckpointLoaderSimple", (20, 200), ckpt_name=CHECKPOINT)
    patched = wf.add("LoraLoader", (20, 400), lora_name=LORA, strength_model=1.0, strength_clip=1.0)
    wf.link(ckpt, 0, patched, "model")
    wf.link(ckpt, 1, patched, "clip")
    pos, neg = _prompts(wf, (patched, 1), "an outlined yellow star on a blue background, center")
    _sample_and_save(wf, (patched, 0), (pos, 0), (neg, 0), (ckpt, 2), "kiln-lora", batch=2, seed=42)
    wf.note("The demo LoRA draws an outline around the shape when the prompt says 'outlined'. Set "
            "strength_model to 0 to compare with the base model.", (20, 20))
    return wf.to_json()


def controlnet(oi: dict) -> dict:
    """ControlNet: an edge map (input/kiln-demo-edges.png) says where the shape goes; the prompt says what it is."""
    wf = Workflow(oi, "controlnet")
    ckpt = wf.add("CheckpointLoaderSimple", (20, 200), ckpt_name=CHECKPOINT)
    pos, neg = _prompts(wf, (ckpt, 1), "a red star on a white background")
    loader = wf.add("ControlNetLoader", (20, 600), control_net_name=CONTROLNET)
    hint = wf.add("LoadImage", (20, 740), title="Edge map (where the shape goes)", image=HINT)
    apply = wf.add("ControlNetApplyAdvanced", (800, 400), strength=1.0, start_percent=0.0, end_percent=1.0)
    wf.link(pos, 0, apply, "positive")
    wf.link(neg, 0, apply, "negative")
    wf.link(loader, 0, apply, "control_net")
    wf.link(hint, 0, apply, "image")
    _sample_and_save(wf, (ckpt, 0), (apply, 0), (apply, 1), (ckpt, 2), "kiln-controlnet", batch=1, seed=42,
                     x=1160)
    wf.note("The demo ControlNet reads a white outline on black (64x64) and puts the shape there; the prompt "
            "leaves the position out. Draw your own edge map and load it instead.", (20, 20))
    return wf.to_json()


BUILDERS = {"default": default, "img2img": img2img, "inpainting": inpainting, "hires_fix": hires_fix,
            "lora": lora, "controlnet": controlnet}


def object_info() -> dict:
    """The live /object_info of the built-in nodes."""
    from engine.config import RuntimeConfig
    from engine.paths import Paths
    from engine.registry import build_registry

    paths = Paths.from_config(RuntimeConfig(base_directory=str(ROOT)))
    return build_registry(paths, custom_nodes=False).object_info()


def main() -> None:
    oi = object_info()
    for name, build in BUILDERS.items():
        path = ROOT / "workflows" / f"{name}.json"
        path.write_text(json.dumps(build(oi), indent=1) + "\n")
        print(path.relative_to(ROOT))


if __name__ == "__main__":
    main()
