"""What a model file is, from its key names and shapes (checkpoints.md §2, §3, §5).

Detection never reads tensor data, except the one value statistic ComfyUI uses to tell SD2
768-v checkpoints from 512 eps ones (§5). Inputs are `key -> shape` mappings, so the reference
key lists work as well as open files.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from torch import Tensor

from diffusion import configs

Shapes = Mapping[str, Sequence[int]]
TensorGetter = Callable[[str], Tensor]

UNET_PREFIXES = ("model.diffusion_model.", "model.model.", "net.")
VAE_PREFIX = "first_stage_model."
# Text-encoder prefixes of single-file checkpoints (text-encoding.md §10 converts what is under them).
TEXT_ENCODER_PREFIXES = {
    "clip_l": ("cond_stage_model.transformer.", "conditioner.embedders.0.transformer."),
    "clip_h": ("cond_stage_model.model.",),
    "clip_g": ("conditioner.embedders.1.model.", "conditioner.embedders.0.model."),
}


class UnknownModelFile(ValueError):
    """A file whose keys match no known model layout."""


class UnsupportedModel(ValueError):
    """A recognised model family that Kiln does not run."""


def describe_keys(shapes: Shapes, limit: int = 8) -> str:
    """A short summary of a state dict for error messages: key count, top prefixes, examples."""
    if not shapes:
        return "the file has no tensors"
    counts: dict[str, int] = {}
    for key in shapes:
        head = ".".join(key.split(".")[:2]) if "." in key else key
        counts[head] = counts.get(head, 0) + 1
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    examples = [f"{k} {list(shapes[k])}" for k in sorted(shapes)[:4]]
    return (f"{len(shapes)} tensors; most common prefixes: " + ", ".join(f"{p}.* ({n})" for p, n in top)
            + "; e.g. " + ", ".join(examples))


def unet_prefix(shapes: Shapes) -> str:
    """The UNet key prefix of a checkpoint: the most frequent known prefix with > 5 keys, else `model.`."""
    counts = {p: sum(1 for k in shapes if k.startswith(p)) for p in UNET_PREFIXES}
    best = max(UNET_PREFIXES, key=lambda p: counts[p])
    return best if counts[best] > 5 else "model."


def _count(shapes: Shapes, fmt: str) -> int:
    """Number of consecutive indices i with some key starting with fmt.format(i)."""
    n = 0
    while any(k.startswith(fmt.format(n)) for k in shapes):
        n += 1
    return n


def measure_unet(shapes: Shapes, prefix: str) -> dict[str, Any] | None:
    """UNet hyper-parameters measured from shapes under `prefix` (checkpoints.md §3.1); None if no UNet."""
    conv_in = shapes.get(prefix + "input_blocks.0.0.weight")
    if conv_in is None:
        return None
    keys = [k[len(prefix):] for k in shapes if k.startswith(prefix)]
    sub = {k: shapes[prefix + k] for k in keys}
    mc, in_channels = int(conv_in[0]), int(conv_in[1])
    out_channels = int(sub["out.2.weight"][0]) if "out.2.weight" in sub else 4
    adm = int(sub["label_emb.0.0.weight"][1]) if "label_emb.0.0.weight" in sub else None
    first_transformer: list[str] = []

    def depth(block: str) -> int:
        d = _count(sub, block + ".1.transformer_blocks.{}.")
        if d and not first_transformer:
            first_transformer.append(block + ".1")
        return d

    n_in = _count(sub, "input_blocks.{}.")
    channel_mult: list[int] = []
    num_res_blocks: list[int] = []
    transformer_depth: list[int] = []
    res, mult = 0, 0
    for n in range(1, n_in):
        block = f"input_blocks.{n}"
        if block + ".0.op.weight" in sub:
            num_res_blocks.append(res)
            channel_mult.append(mult)
            res, mult = 0, 0
        elif block + ".0.in_layers.0.weight" in sub:
            res += 1
            mult = int(sub[block + ".0.out_layers.3.weight"][0]) // mc
            transformer_depth.append(depth(block))
    if res:
        num_res_blocks.append(res)
        channel_mult.append(mult)

    if "middle_block.1.proj_in.weight" in sub:
        depth_middle = _count(sub, "middle_block.1.transformer_blocks.{}.")
        if not first_transformer:
            first_transformer.append("middle_block.1")
    elif "middle_block.0.in_layers.0.weight" in sub:
        depth_middle = -1
    else:
        depth_middle = -2
    n_out = _count(sub, "output_blocks.{}.")
    depth_output = [depth(f"output_blocks.{j}") for j in range(n_out)]

    context_dim, use_linear = None, None
    if first_transformer:
        t = first_transformer[0]
        context_dim = int(sub[t + ".transformer_blocks.0.attn2.to_k.weight"][1])
        use_linear = len(sub[t + ".proj_in.weight"]) == 2
    return {
        "in_channels": in_channels, "out_channels": out_channels, "model_channels": mc,
        "channel_mult": channel_mult, "num_res_blocks": num_res_blocks, "transformer_depth": transformer_depth,
        "transformer_depth_middle": depth_middle, "transformer_depth_output": depth_output,
        "context_dim": context_dim, "use_linear_in_transformer": use_linear, "adm_in_channels": adm,
        "temporal": any("time_stack" in k or "time_mixer" in k for k in keys),
    }


def _heads_fit(m: dict[str, Any], family: str) -> bool:
    """Whether the family's head rule divides every attention width of the measured UNet."""
    s = configs.FAMILY_SETTINGS[family]
    step = s["num_head_channels"] if s["num_head_channels"] > 0 else s["num_heads"]
    return all((m["model_channels"] * mult) % step == 0 and m["model_channels"] * mult >= step
               for mult in m["channel_mult"])


# (family, required values) tried in order; the first match wins (checkpoints.md §3.2). The last
# three rows are Kiln's extension for non-standard sizes (tiny/demo models in the same layouts):
# they keep the family's layout facts and let shapes decide every size.
FAMILY_RULES: list[tuple[str, dict[str, Any]]] = [
    ("sd1", {"context_dim": 768, "model_channels": 320, "use_linear_in_transformer": False, "adm_in_channels": None}),
    ("sd2", {"context_dim": 1024, "model_channels": 320, "use_linear_in_transformer": True, "adm_in_channels": None}),
    ("sdxl_refiner", {"model_channels": 384, "use_linear_in_transformer": True, "context_dim": 1280,
                      "adm_in_channels": 2560, "transformer_depth": [0, 0, 4, 4, 4, 4, 0, 0]}),
    ("sdxl", {"model_channels": 320, "use_linear_in_transformer": True, "transformer_depth": [0, 0, 2, 2, 10, 10],
              "context_dim": 2048, "adm_in_channels": 2816}),
    ("sd1", {"use_linear_in_transformer": False, "adm_in_channels": None}),
    ("sd2", {"use_linear_in_transformer": True, "adm_in_channels": None}),
    ("sdxl", {"use_linear_in_transformer": True}),
]


def match_family(m: dict[str, Any]) -> str | None:
    """The family of a measured UNet, or None when no rule matches."""
    if m["temporal"] or m["context_dim"] is None:
        return None
    for family, required in FAMILY_RULES:
        if all(m[k] == v for k, v in required.items()) and _heads_fit(m, family):
            if family == "sdxl" and m["adm_in_channels"] is None:
                continue
            return family
    return None


def unet_config(m: dict[str, Any], family: str) -> dict[str, Any]:
    """A UNetModel config from measurements plus the family's head rule and attention precision."""
    settings = configs.FAMILY_SETTINGS[family]
    cfg = {k: v for k, v in m.items() if k != "temporal"}
    cfg.update({k: settings[k] for k in ("num_heads", "num_head_channels", "attention_upcast")})
    return cfg


def _last_output_norm1_bias(cfg: dict[str, Any], prefix: str) -> str | None:
    """`output_blocks.(last with a transformer).1.transformer_blocks.0.norm1.bias` (SD2: block 11)."""
    for j in reversed(range(len(cfg["transformer_depth_output"]))):
        if cfg["transformer_depth_output"][j]:
            return f"{prefix}output_blocks.{j}.1.transformer_blocks.0.norm1.bias"
    return None


def prediction_type(shapes: Shapes, family: str, cfg: dict[str, Any], prefix: str,
                    get_tensor: TensorGetter | None) -> tuple[str, dict[str, Any]]:
    """`("eps" | "v", sampling options)` per checkpoints.md §5; SD2 needs `get_tensor` for its statistic."""
    if family == "sd2":
        key = _last_output_norm1_bias(cfg, prefix)
        if cfg["in_channels"] != 4 or key is None or get_tensor is None:
            return "eps", {}
        std = get_tensor(key).std(unbiased=False).item()  # in the stored dtype, as ComfyUI
        return ("v" if std > 0.09 else "eps"), {}
    if family == "sdxl":
        if "edm_mean" in shapes and "edm_std" in shapes:
            raise UnsupportedModel("this SDXL checkpoint uses the EDM latent mean/std format (Playground v2.5), "
                                   "which Kiln does not support")
        if "edm_vpred.sigma_max" in shapes:
            opts = {"edm_sigma_max": get_tensor("edm_vpred.sigma_max").item() if get_tensor else None}
            if "edm_vpred.sigma_min" in shapes and get_tensor:
                opts["edm_sigma_min"] = get_tensor("edm_vpred.sigma_min").item()
            return "v", opts
        if "v_pred" in shapes:
            return "v", ({"zsnr": True} if "ztsnr" in shapes else {})
    return "eps", {}


@dataclass
class CheckpointInfo:
    """What a single-file checkpoint contains and how to build its UNet."""

    family: str
    unet_prefix: str
    unet_config: dict[str, Any]
    prediction: str
    inpaint: bool
    has_vae: bool
    text_encoders: list[str] = field(default_factory=list)
    sampling_options: dict[str, Any] = field(default_factory=dict)


def detect_checkpoint(shapes: Shapes, get_tensor: TensorGetter | None = None,
                      prefix: str | None = None) -> CheckpointInfo:
    """Family, UNet config, prediction type and parts of a single-file checkpoint (or bare UNet with prefix "")."""
    prefix = unet_prefix(shapes) if prefix is None else prefix
    m = measure_unet(shapes, prefix)
    if m is None:
        raise UnknownModelFile(f"no UNet found (no '{prefix}input_blocks.0.0.weight'): {describe_keys(shapes)}")
    family = match_family(m)
    if family is None:
        raise UnknownModelFile(
            "Could not detect model type: the UNet matches no supported family (SD1, SD2, SDXL, SDXL refiner); "
            f"measured model_channels={m['model_channels']}, context_dim={m['context_dim']}, "
            f"linear_projections={m['use_linear_in_transformer']}, adm={m['adm_in_channels']}, "
            f"transformer_depth={m['transformer_depth']}, temporal={m['temporal']}")
    cfg = unet_config(m, family)
    prediction, options = prediction_type(shapes, family, cfg, prefix, get_tensor)
    encoders = [name for name, prefixes in TEXT_ENCODER_PREFIXES.items()
                if any(k.startswith(prefixes) for k in shapes)]
    return CheckpointInfo(family=family, unet_prefix=prefix, unet_config=cfg, prediction=prediction,
                          inpaint=cfg["in_channels"] > 4, has_vae=f"{VAE_PREFIX}decoder.conv_in.weight" in shapes,
                          text_encoders=encoders, sampling_options=options)


# ---------------------------------------------------------------------------------------------
# Standalone files

_LORA_MARKERS = (".lora_up.", ".lora_down.", "_lora.up.", ".lora.up.", ".lora_A.", ".lora_B.", ".hada_w1_a",
                 ".lokr_w1", ".lokr_w2", ".oft_blocks", ".a1.weight", ".diff", ".lora_linear_layer.")


def file_kind(shapes: Shapes) -> str:
    """`checkpoint | unet | vae | controlnet | t2i_adapter | lora | embedding | upscale` for a state dict.

    Raises UnknownModelFile with a summary of the keys when nothing matches.
    """
    keys = set(shapes)
    if any(k.endswith("input_blocks.0.0.weight") and k.startswith(UNET_PREFIXES) for k in keys):
        return "checkpoint"
    if {"control_model.zero_convs.0.0.weight", "zero_convs.0.0.weight",
            "controlnet_cond_embedding.conv_in.weight"} & keys:
        return "controlnet"
    if "input_blocks.0.0.weight" in keys and "out.2.weight" in keys:
        return "unet"
    if ({"body.0.in_conv.weight", "adapter.body.0.in_conv.weight"} & keys
            or ({"conv_in.weight", "body.0.block1.weight"} <= keys)
            or any(k.startswith("adapter.body.0.resnets.0.") for k in keys)):
        return "t2i_adapter"
    if (({"encoder.conv_in.weight", "decoder.conv_in.weight"} <= keys)
            or f"{VAE_PREFIX}decoder.conv_in.weight" in keys):
        return "vae"
    if any(marker in k for k in keys for marker in _LORA_MARKERS):
        return "lora"
    if ({"model.0.weight", "model.1.sub.0.RDB1.conv1.0.weight"} <= keys
            or ({"conv_first.weight", "conv_last.weight"} <= keys
                and any(k.startswith(("body.0.rdb1.", "RRDB_trunk.0.")) for k in keys))):
        return "upscale"
    if _looks_like_embedding(shapes):
        return "embedding"
    raise UnknownModelFile(f"not a model file Kiln knows (checkpoint, VAE, ControlNet, T2I-Adapter, LoRA, "
                           f"embedding or upscale model): {describe_keys(shapes)}")


def _looks_like_embedding(shapes: Shapes) -> bool:
    """Textual-inversion layouts (checkpoints.md §9): A1111, SDXL clip_l/clip_g, diffusers single token."""
    keys = set(shapes)
    if any(k.startswith("string_to_param.") for k in keys) or "emb_params" in keys:
        return True
    if keys and keys <= {"clip_l", "clip_g"}:
        return True
    return len(keys) == 1 and len(next(iter(shapes.values()))) in (1, 2) \
        and next(iter(shapes.values()))[-1] in (768, 1024, 1280)


def controlnet_prefix(shapes: Shapes) -> str:
    """`control_model.` or `` for an original-format ControlNet."""
    return "control_model." if "control_model.zero_convs.0.0.weight" in shapes else ""


def detect_controlnet(shapes: Shapes) -> tuple[str, dict[str, Any], int]:
    """(family, UNet-encoder config, hint channels) of an original-format ControlNet (checkpoints.md §7.1)."""
    prefix = controlnet_prefix(shapes)
    m = measure_unet(shapes, prefix)
    if m is None or f"{prefix}input_hint_block.0.weight" not in shapes:
        raise UnknownModelFile(f"not an original-format ControlNet: {describe_keys(shapes)}")
    family = match_family(m)
    if family is None:
        raise UnknownModelFile(f"ControlNet matches no supported family: context_dim={m['context_dim']}, "
                               f"model_channels={m['model_channels']}, adm={m['adm_in_channels']}")
    return family, unet_config(m, family), int(shapes[f"{prefix}input_hint_block.0.weight"][1])


def vae_config(shapes: Shapes, prefix: str = "") -> dict[str, Any]:
    """AutoencoderKL hyper-parameters from shapes (the SD VAE gives configs.VAE; tiny ones work too)."""
    def shape(key: str) -> Sequence[int]:
        if prefix + key not in shapes:
            raise UnknownModelFile(f"VAE weights incomplete: '{prefix}{key}' is missing; {describe_keys(shapes)}")
        return shapes[prefix + key]

    ch, in_channels = int(shape("encoder.conv_in.weight")[0]), int(shape("encoder.conv_in.weight")[1])
    levels = _count(shapes, prefix + "encoder.down.{}.")
    ch_mult = [int(shape(f"encoder.down.{i}.block.0.conv2.weight")[0]) // ch for i in range(levels)]
    return {"ch": ch, "ch_mult": ch_mult, "num_res_blocks": _count(shapes, prefix + "encoder.down.0.block.{}."),
            "in_channels": in_channels, "out_ch": int(shape("decoder.conv_out.weight")[0]),
            "z_channels": int(shape("decoder.conv_in.weight")[1]), "embed_dim": int(shape("post_quant_conv.weight")[0])}
