"""Seeded tiny UNet/VAE/ControlNet models and single-file checkpoints written from them (test helpers)."""
import torch
from safetensors.torch import save_file

from diffusion import configs
from diffusion.models.controlnet import ControlNet
from diffusion.models.unet import UNetModel
from diffusion.models.vae import AutoencoderKL

FAMILY_CONFIGS = {"sd1": configs.TINY_SD1, "sd2": configs.TINY_SD2, "sdxl": configs.TINY_SDXL}


def seeded(module: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> torch.nn.Module:
    """Fill every parameter from a seeded normal distribution (norm gains around 1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            value = torch.randn(p.shape, generator=gen) * scale
            if name.endswith("weight") and p.dim() == 1:  # GroupNorm/LayerNorm gains
                value += 1.0
            p.copy_(value)
    return module.eval().requires_grad_(False)


def tiny_unet(family: str, seed: int = 0) -> UNetModel:
    return seeded(UNetModel(**FAMILY_CONFIGS[family]), seed)


def tiny_vae(seed: int = 1) -> AutoencoderKL:
    return seeded(AutoencoderKL(**configs.TINY_VAE), seed)


def tiny_controlnet(seed: int = 2) -> ControlNet:
    return seeded(ControlNet(hint_channels=3, **configs.TINY_SD1), seed)


def checkpoint_dict(unet: torch.nn.Module, vae: torch.nn.Module | None, extra: dict | None = None,
                    dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The single-file layout: `model.diffusion_model.*`, `first_stage_model.*`, plus DDPM/EMA leftovers."""
    sd = {f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()}
    if vae is not None:
        sd.update({f"first_stage_model.{k}": v for k, v in vae.state_dict().items()})
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    sd["betas"] = torch.linspace(0.00085, 0.012, 1000)  # ignored by the loader, as in real files
    sd["model_ema.decay"] = torch.tensor(0.9999)
    sd.update(extra or {})
    return {k: v.contiguous() for k, v in sd.items()}


def write_checkpoint(path, *args, **kwargs) -> None:
    save_file(checkpoint_dict(*args, **kwargs), str(path))


def unet_inputs(family: str, seed: int = 5, batch: int = 2, size: int = 8):
    """(x, timesteps, context, y) for a tiny UNet of a family."""
    gen = torch.Generator().manual_seed(seed)
    cfg = FAMILY_CONFIGS[family]
    x = torch.randn(batch, cfg["in_channels"], size, size, generator=gen)
    ctx = torch.randn(batch, 77, cfg["context_dim"], generator=gen)
    y = torch.randn(batch, cfg["adm_in_channels"], generator=gen) if cfg["adm_in_channels"] else None
    return x, torch.tensor([1.0, 999.0][:batch]), ctx, y
