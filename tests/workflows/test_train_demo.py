"""The demo recipe itself: a tiny run of tools/train_demo.py writes a checkpoint the ordinary loader takes."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from diffusion.loading import load_checkpoint
from tools import train_demo

TINY = ["--scale-steps", "0.002", "--images", "48", "--threads", "2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny runs with the same seed (the recipe sets torch's thread count; the other tests keep theirs)."""
    folder = tmp_path_factory.mktemp("recipe")
    paths = [folder / f"run{i}.safetensors" for i in range(2)]
    threads = torch.get_num_threads()
    try:
        for path in paths:
            train_demo.main(["--out", str(path), *TINY])
    finally:
        torch.set_num_threads(threads)
    return paths


def test_recipe_writes_an_sd1_checkpoint_with_its_config_in_the_metadata(runs):
    model, clip, vae = load_checkpoint(str(runs[0]))
    assert model.family == "sd1" and model.prediction == "eps" and clip is not None and vae is not None
    with safe_open(str(runs[0]), "pt") as f:
        meta = f.metadata()
    unet = json.loads(meta["kiln.training_config"])["unet"]
    assert int(meta["kiln.unet_steps"]) == unet["steps"] + unet["detail_steps"]  # both phases ran
    assert model.config["model_channels"] == unet["model_channels"]
    assert meta["kiln.recipe"] == "tools/train_demo.py" and "star" in json.loads(meta["kiln.dataset"])["shapes"]


def test_recipe_is_deterministic_from_its_seed(runs):
    first, second = (load_file(str(p)) for p in runs)
    assert first.keys() == second.keys()
    assert all(first[k].equal(second[k]) for k in first)
