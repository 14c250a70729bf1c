"""Upscale nodes: a model file of either key layout loads from upscale_models and upscales by its scale."""

import os

import torch
from safetensors.torch import save_file

from diffusion.upscale import RRDBConfig, RRDBNet
from nodes import upscale as U


def put_model(paths, name, sd):
    folder = paths.folder_paths("upscale_models")[0]
    os.makedirs(folder, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(folder, name))


def test_x2_model_file_upscales_an_image_to_twice_its_size_with_progress(ctx, paths):
    torch.manual_seed(0)
    net = RRDBNet(RRDBConfig(in_nc=3, out_nc=3, nf=4, nb=1, n_up=1))
    put_model(paths, "x2.safetensors", net.state_dict())
    model = U.upscale_model_loader(ctx, "x2.safetensors")
    out = U.image_upscale_with_model(ctx, model, torch.rand(1, 6, 5, 3))
    assert out.shape == (1, 12, 10, 3)
    assert ctx.progress_calls[-1] == (1, 1)
    with torch.no_grad():
        direct = net(torch.rand(1, 3, 6, 5)).shape
    assert direct[-2:] == (12, 10)


def test_real_esrgan_layout_file_is_recognised(ctx, paths):
    torch.manual_seed(1)
    net = RRDBNet(RRDBConfig(in_nc=3, out_nc=3, nf=4, nb=1, n_up=2))
    renamed = {}
    for k, v in net.state_dict().items():
        if k.startswith("model.1.sub.1."):
            renamed["conv_body." + k.split(".", 4)[4]] = v
        elif k.startswith("model.1.sub.0."):
            _, _, _, n, rdb, conv, _, leaf = k.split(".")
            renamed[f"body.{n}.rdb{rdb[-1]}.{conv}.{leaf}"] = v
        else:
            index, leaf = k.split(".")[1], k.split(".")[2]
            name = {"0": "conv_first", "3": "conv_up1", "6": "conv_up2", "8": "conv_hr", "10": "conv_last"}[index]
            renamed[f"{name}.{leaf}"] = v
    folder = paths.folder_paths("upscale_models")[0]
    os.makedirs(folder, exist_ok=True)
    torch.save({"params_ema": renamed}, os.path.join(folder, "RealESRGAN_x4.pth"))  # as basicsr writes it
    model = U.upscale_model_loader(ctx, "RealESRGAN_x4.pth")
    assert model.config.scale == 4
    assert U.image_upscale_with_model(ctx, model, torch.rand(1, 4, 4, 3)).shape == (1, 16, 16, 3)
