"""Small stand-ins shared by the sampling tests: a recording fake UNet and a micro SD1 model."""
import torch
from torch import nn

from diffusion import configs
from diffusion.latent_formats import SD15, SDXL
from diffusion.model_handle import ModelHandle
from diffusion.models.unet import UNetModel

MICRO_SD1 = {**configs.TINY_SD1, "channel_mult": [1], "num_res_blocks": [1],
             "transformer_depth": [1], "transformer_depth_output": [1, 1]}


class FakeUNet(nn.Module):
    """eps[b] = context[b, 0, 0] everywhere (or `out`), recording every call's arguments."""

    def __init__(self, out=None):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.compute_dtype = None
        self.calls = []
        self.out = out

    def forward(self, x, timesteps, context, y=None, control=None):
        self.calls.append({"x": x.clone(), "t": timesteps.clone(), "context": context.clone(),
                           "y": None if y is None else y.clone(), "control": control})
        if self.out is not None:
            return self.out(x, timesteps, context)
        return context[:, 0, 0].reshape(-1, 1, 1, 1).expand(x.shape[0], 4, *x.shape[2:]).clone()


def fake_model(family="sd1", prediction="eps", in_channels=4, out=None):
    unet = FakeUNet(out)
    fmt = SDXL if family.startswith("sdxl") else SD15
    return ModelHandle(unet, {"in_channels": in_channels}, family, prediction, fmt), unet


def micro_model(seed=0, in_channels=4):
    config = {**MICRO_SD1, "in_channels": in_channels}
    unet = UNetModel(**config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in unet.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return ModelHandle(unet.eval(), config, "sd1", "eps", SD15)


def const_cond(value, tokens=77, dim=32, **options):
    """A conditioning entry whose fake-UNet eps is `value`."""
    return [torch.full((1, tokens, dim), float(value)), dict(options)]
