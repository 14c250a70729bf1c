"""LoRA-family weight patches (LoRA/LoCon, LoHa, LoKr, full diff, DoRA) and how files are matched.

A patch file is never parsed by its key names: a map from every accepted external name to a model
weight key is generated from the model itself, then each name is probed in the file with the
adapter suffixes (checkpoints.md §8.1–8.3). Keys of the file that nothing consumed are reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
from torch import Tensor

# ---------------------------------------------------------------------------------------------
# Patch classes: each turns the current float32 weight into the patched one (checkpoints.md §8.4)


def _dora(weight: Tensor, delta: Tensor, dora_scale: Tensor, strength: float) -> Tensor:
    """Weight-decomposed update: rescale W + ΔW to the stored magnitude, then blend by strength."""
    patched = weight + delta
    dora_scale = dora_scale.float()
    if dora_scale.shape[0] == weight.shape[0]:
        # magnitude per output row, from the original weight (ComfyUI's quirk)
        norm = weight.reshape(weight.shape[0], -1).norm(dim=1).reshape(-1, *[1] * (weight.dim() - 1))
    else:  # magnitude per input column (LyCORIS layout), from the patched weight
        norm = patched.transpose(0, 1).reshape(patched.shape[1], -1).norm(dim=1)
        norm = norm.reshape(1, patched.shape[1], *[1] * (patched.dim() - 2))
    norm = norm + torch.finfo(weight.dtype).eps
    patched = patched * (dora_scale.reshape(norm.shape) / norm)
    return weight + strength * (patched - weight)


def _finish(weight: Tensor, delta: Tensor, scale: float, strength: float, dora_scale: Tensor | None) -> Tensor:
    delta = delta.reshape(weight.shape)
    if dora_scale is not None:
        return _dora(weight, scale * delta, dora_scale, strength)
    return weight + (strength * scale) * delta


@dataclass(frozen=True)
class LoRA:
    """Low-rank update W + s·(alpha/r)·up·down (Hu et al. 2021); `mid` is LoCon's Tucker core."""

    up: Tensor
    down: Tensor
    alpha: float | None = None
    mid: Tensor | None = None
    dora_scale: Tensor | None = None

    def apply(self, weight: Tensor, strength: float) -> Tensor:
        up, down = self.up.float(), self.down.float()
        rank = down.shape[0]
        scale = self.alpha / rank if self.alpha is not None else 1.0
        if self.mid is not None:
            # D'[q, i, a, b] = Σ_p mid[q, p, a, b] · down[p, i]
            down = torch.einsum("qpab,pi->qiab", self.mid.float(), down.flatten(1))
        delta = up.flatten(1) @ down.flatten(1)
        return _finish(weight, delta, scale, strength, self.dora_scale)


def _cp(t: Tensor, b: Tensor, a: Tensor) -> Tensor:
    """CP/Tucker reconstruction m[p, q, k, l] = Σ_ij t[i, j, k, l]·b[j, q]·a[i, p]."""
    return torch.einsum("ijkl,jq,ip->pqkl", t.float(), b.float().flatten(1), a.float().flatten(1))


@dataclass(frozen=True)
class LoHa:
    """Hadamard product of two low-rank updates (Hyeon-Woo et al. 2022, FedPara / LyCORIS LoHa)."""

    w1_a: Tensor
    w1_b: Tensor
    w2_a: Tensor
    w2_b: Tensor
    alpha: float | None = None
    t1: Tensor | None = None
    t2: Tensor | None = None
    dora_scale: Tensor | None = None

    def apply(self, weight: Tensor, strength: float) -> Tensor:
        rank = self.w1_b.shape[0]
        scale = self.alpha / rank if self.alpha is not None else 1.0
        if self.t1 is not None and self.t2 is not None:
            m1 = _cp(self.t1, self.w1_b, self.w1_a)
            m2 = _cp(self.t2, self.w2_b, self.w2_a)
        else:
            m1 = self.w1_a.float() @ self.w1_b.float().flatten(1)
            m2 = self.w2_a.float() @ self.w2_b.float().flatten(1)
        return _finish(weight, m1 * m2, scale, strength, self.dora_scale)


@dataclass(frozen=True)
class LoKr:
    """Kronecker-product update kron(W1, W2) (LyCORIS LoKr, Yeh et al. 2023)."""

    w1: Tensor | None = None
    w1_a: Tensor | None = None
    w1_b: Tensor | None = None
    w2: Tensor | None = None
    w2_a: Tensor | None = None
    w2_b: Tensor | None = None
    t2: Tensor | None = None
    alpha: float | None = None
    dora_scale: Tensor | None = None

    def apply(self, weight: Tensor, strength: float) -> Tensor:
        dim = None
        if self.w1 is not None:
            w1 = self.w1.float()
        else:
            w1 = self.w1_a.float() @ self.w1_b.float()  # type: ignore[union-attr]
            dim = self.w1_b.shape[0]  # type: ignore[union-attr]
        if self.w2 is not None:
            w2 = self.w2.float()
        else:
            dim = self.w2_b.shape[0]  # type: ignore[union-attr]
            if self.t2 is not None:
                w2 = _cp(self.t2, self.w2_b, self.w2_a)  # type: ignore[arg-type]
            else:
                w2 = self.w2_a.float() @ self.w2_b.float().flatten(1)  # type: ignore[union-attr]
        if w2.dim() == 4:
            w1 = w1[:, :, None, None]
        scale = self.alpha / dim if self.alpha is not None and dim is not None else 1.0
        return _finish(weight, torch.kron(w1, w2), scale, strength, self.dora_scale)


@dataclass(frozen=True)
class Diff:
    """A full-weight difference (LyCORIS "full", norm `w_norm`/`b_norm`, bias `diff_b`)."""

    diff: Tensor

    def apply(self, weight: Tensor, strength: float) -> Tensor:
        if self.diff.shape != weight.shape:
            raise ValueError(f"diff shape {tuple(self.diff.shape)} does not match weight {tuple(weight.shape)}")
        return weight + strength * self.diff.float()


@dataclass(frozen=True)
class SetWeight:
    """Replace the weight outright (strength is ignored, as in ComfyUI)."""

    value: Tensor

    def apply(self, weight: Tensor, strength: float) -> Tensor:
        return self.value.float().reshape(weight.shape).clone()


@dataclass(frozen=True)
class Merge:
    """Model merging as a patch: `W·(1−s) + s·other` (blend) or `W + s·other` (add, subtract).

    `other` is read from the source model when the patch is applied, with the source's own patches
    (e.g. a LoRA on the second model) applied first, so merges see what that model would compute with.
    """

    source: Tensor
    source_patches: tuple = ()
    blend: bool = True

    def apply(self, weight: Tensor, strength: float) -> Tensor:
        other = self.source.detach().to(weight.device, torch.float32, copy=True)
        for s, patch in self.source_patches:
            other = patch.apply(other, s)
        if self.blend:
            return weight * (1.0 - strength) + other * strength
        return weight + other * strength


WeightPatch = LoRA | LoHa | LoKr | Diff | SetWeight | Merge

# ---------------------------------------------------------------------------------------------
# Probing a file for the patch of one external name

_LORA_SPELLINGS = (  # (up suffix, down suffix, mid suffix)
    (".lora_up.weight", ".lora_down.weight", ".lora_mid.weight"),
    ("_lora.up.weight", "_lora.down.weight", None),
    (".lora_B.weight", ".lora_A.weight", None),
    (".lora.up.weight", ".lora.down.weight", None),
    (".lora_B", ".lora_A", None),
    (".lora_linear_layer.up.weight", ".lora_linear_layer.down.weight", None),
    (".lora_B.default.weight", ".lora_A.default.weight", None),
)


def _probe(name: str, sd: Mapping[str, Tensor], used: set[str]) -> list[tuple[str, WeightPatch]]:
    """The patches (with their target suffix, weight or bias) that the file holds for `name`."""

    def take(suffix: str) -> Tensor | None:
        key = name + suffix
        if key in sd:
            used.add(key)
            return sd[key]
        return None

    alpha_t = take(".alpha")
    alpha = float(alpha_t.item()) if alpha_t is not None else None
    dora = take(".dora_scale")
    found: list[tuple[str, WeightPatch]] = []
    for up_s, down_s, mid_s in _LORA_SPELLINGS:
        if name + up_s in sd and name + down_s in sd:
            up, down = take(up_s), take(down_s)
            mid = take(mid_s) if mid_s else None
            found.append(("weight", LoRA(up=up, down=down, alpha=alpha, mid=mid, dora_scale=dora)))  # type: ignore[arg-type]
            break
    if name + ".hada_w1_a" in sd:
        parts = {p: take("." + p) for p in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2")}
        found.append(("weight", LoHa(parts["hada_w1_a"], parts["hada_w1_b"], parts["hada_w2_a"],  # type: ignore[arg-type]
                                     parts["hada_w2_b"], alpha, parts["hada_t1"], parts["hada_t2"], dora)))  # type: ignore[arg-type]
    if any(name + s in sd for s in (".lokr_w1", ".lokr_w1_a", ".lokr_w2", ".lokr_w2_a")):
        parts = {p: take("." + p) for p in ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")}
        found.append(("weight", LoKr(parts["lokr_w1"], parts["lokr_w1_a"], parts["lokr_w1_b"], parts["lokr_w2"],
                                     parts["lokr_w2_a"], parts["lokr_w2_b"], parts["lokr_t2"], alpha, dora)))
    for suffix, target, cls in ((".w_norm", "weight", Diff), (".b_norm", "bias", Diff), (".diff", "weight", Diff),
                                (".diff_b", "bias", Diff), (".set_weight", "weight", SetWeight)):
        value = take(suffix)
        if value is not None:
            found.append((target, cls(value)))
    return found


@dataclass
class PatchFile:
    """The patches a LoRA-family file holds for one model, and the file keys nothing consumed."""

    patches: dict[str, WeightPatch]
    unmatched: list[str]


def match_patches(sd: Mapping[str, Tensor], key_maps: Iterable[Mapping[str, str]]) -> list[PatchFile]:
    """Probe `sd` once per model's key map (external name → model key without `.weight`).

    Returns one PatchFile per map; `unmatched` (on every entry) lists the file keys no map consumed.
    """
    used: set[str] = set()
    results = []
    for key_map in key_maps:
        patches: dict[str, WeightPatch] = {}
        for name, module_key in key_map.items():
            for target, patch in _probe(name, sd, used):
                patches[f"{module_key}.{target}"] = patch  # a later adapter for the same weight wins
        results.append(PatchFile(patches, []))
    unmatched = sorted(k for k in sd if k not in used and not k.startswith("bundle_emb."))
    for r in results:
        r.unmatched = unmatched
    return results


# ---------------------------------------------------------------------------------------------
# External names (checkpoints.md §8.2)


def unet_key_map(weight_keys: Iterable[str], ldm_to_diffusers: Mapping[str, str] | None = None) -> dict[str, str]:
    """External LoRA names → UNet module keys, from the UNet's own state-dict keys (LDM layout).

    `ldm_to_diffusers` maps an LDM module path to its diffusers path (adds the kohya diffusers-style,
    `lycoris_` and old attention-processor names when given).
    """
    out: dict[str, str] = {}
    for key in weight_keys:
        if key.endswith(".weight"):
            path = key[: -len(".weight")]
            out["lora_unet_" + path.replace(".", "_")] = path
            out["diffusion_model." + path] = path
            q = (ldm_to_diffusers or {}).get(path)
            if q:
                out["lora_unet_" + q.replace(".", "_")] = path
                out["lycoris_" + q.replace(".", "_")] = path
                processor = q.replace(".to_", ".processor.to_")
                if processor.endswith(".to_out.0"):
                    processor = processor[: -len(".0")]
                if processor != q:
                    out[processor] = path
                    out["unet." + processor] = path
        elif key.endswith(".bias"):
            out["diffusion_model." + key] = key[: -len(".bias")]
    return out


_TE_MODULES = ("mlp.fc1", "mlp.fc2", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj")


def text_encoder_key_map(encoder: str, weight_keys: Iterable[str], *, sdxl_second: bool = False,
                         prefix: str = "") -> dict[str, str]:
    """External LoRA names → text-encoder module keys (`prefix` + HF CLIP path, without `.weight`).

    `encoder` is `clip_l`, `clip_h` or `clip_g`; `sdxl_second` marks clip_g beside clip_l (SDXL base),
    which takes the `lora_te2_` / `text_encoder_2.` spellings.
    """
    keys = list(weight_keys)
    out: dict[str, str] = {}
    for key in keys:
        if key.endswith(".weight"):
            path = key[: -len(".weight")]
            out[f"text_encoders.{encoder}.transformer.{path}"] = prefix + path
    layers = {int(k.split(".")[3]) for k in keys if k.startswith("text_model.encoder.layers.")}
    for b in sorted(layers):
        for m in _TE_MODULES:
            hf = f"text_model.encoder.layers.{b}.{m}"
            if hf + ".weight" not in keys:
                continue
            kohya = f"text_model_encoder_layers_{b}_{m.replace('.', '_')}"
            if sdxl_second:
                names = [f"lora_te2_{kohya}", f"text_encoder_2.{hf}"]
            else:
                names = [f"lora_te_{kohya}", f"text_encoder.{hf}"]
                names += [f"lora_prior_te_{kohya}"] if encoder == "clip_g" else [f"lora_te1_{kohya}"]
            for n in names:
                out[n] = prefix + hf
    if encoder == "clip_g" and "text_projection.weight" in keys:
        for n in (("lora_te2_text_projection", "lora_prior_te_text_projection") if sdxl_second
                  else ("lora_prior_te_text_projection",)):
            out[n] = prefix + "text_projection"
    return out


def ldm_to_diffusers_paths(config: Mapping[str, object], weight_keys: Iterable[str]) -> dict[str, str]:
    """LDM UNet module path → diffusers path, for every weight of the UNet (checkpoints.md §8.2)."""
    from diffusion.keymaps.unet import RESNET, TOP

    res_blocks: list[int] = list(config["num_res_blocks"])  # type: ignore[arg-type]
    levels = len(config["channel_mult"])  # type: ignore[arg-type]
    blocks = {ldm: dif for dif, ldm in TOP.items()}
    n = 1
    for i in range(levels):
        for j in range(res_blocks[i]):
            blocks[f"input_blocks.{n}.0"] = f"down_blocks.{i}.resnets.{j}"
            blocks[f"input_blocks.{n}.1"] = f"down_blocks.{i}.attentions.{j}"
            n += 1
        if i != levels - 1:
            blocks[f"input_blocks.{n}.0.op"] = f"down_blocks.{i}.downsamplers.0.conv"
            n += 1
    blocks.update({"middle_block.0": "mid_block.resnets.0", "middle_block.1": "mid_block.attentions.0",
                   "middle_block.2": "mid_block.resnets.1"})
    m = 0
    for i in range(levels):
        n_res = res_blocks[levels - 1 - i] + 1
        for j in range(n_res):
            blocks[f"output_blocks.{m + j}.0"] = f"up_blocks.{i}.resnets.{j}"
            blocks[f"output_blocks.{m + j}.1"] = f"up_blocks.{i}.attentions.{j}"
        for slot in (1, 2):  # the upsampler follows the last block's transformer when it has one
            blocks[f"output_blocks.{m + n_res - 1}.{slot}.conv"] = f"up_blocks.{i}.upsamplers.0.conv"
        m += n_res
    resnet_parts = {ldm: dif for dif, ldm in RESNET.items()}
    out: dict[str, str] = {}
    for key in weight_keys:
        if not key.endswith(".weight"):
            continue
        path = key[: -len(".weight")]
        parts = path.split(".")
        for cut in range(len(parts), 0, -1):
            head, rest = ".".join(parts[:cut]), parts[cut:]
            if head in blocks:
                tail = ".".join(rest)
                if ".resnets." in blocks[head] and tail in resnet_parts:
                    tail = resnet_parts[tail]
                out[path] = ".".join([blocks[head], tail]) if tail else blocks[head]
                break
    return out


def apply_patch_file(sd: Mapping[str, Tensor], model, clip, strength_model: float, strength_clip: float):
    """Patch clones of MODEL and CLIP with a LoRA-family file; returns (model, clip, unmatched keys).

    Both key maps are always probed, so a text-encoder patch never lands on the UNet and the keys
    that matched neither model are reported (checkpoints.md §8.5).
    """
    unet_map = unet_key_map(model.weight_keys(), ldm_to_diffusers_paths(model.config, model.weight_keys())) \
        if model is not None else {}
    clip_map: dict[str, str] = {}
    if clip is not None:
        names = list(clip.encoders)
        for name in names:
            clip_map.update(text_encoder_key_map(name, clip.hf_weight_keys(name), prefix=f"{name}.transformer.",
                                                 sdxl_second=name == "clip_g" and "clip_l" in names))
    unet_file, clip_file = match_patches(sd, [unet_map, clip_map])
    if model is not None and strength_model != 0:
        model = model.clone()
        model.add_patches(unet_file.patches, strength_model)
    if clip is not None and strength_clip != 0:
        clip = clip.clone()
        clip.add_patches(clip_file.patches, strength_clip)
    return model, clip, unet_file.unmatched
