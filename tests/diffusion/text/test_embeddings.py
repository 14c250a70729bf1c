"""Textual-inversion files: lookup under the embeddings folders and each on-disk format (§5)."""

import os
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from diffusion.embeddings import EmbeddingLookup, select_vectors

G = torch.Generator().manual_seed(7)
V768 = torch.randn(2, 768, generator=G)
V1280 = torch.randn(3, 1280, generator=G)


def test_lookup_searches_subfolders_and_tries_the_extensions_in_order(tmp_path):
    (tmp_path / "styles").mkdir()
    save_file({"emb_params": V768}, str(tmp_path / "styles" / "ink.safetensors"))
    torch.save({"emb_params": V768[:1]}, str(tmp_path / "styles" / "ink.pt"))
    lookup = EmbeddingLookup([str(tmp_path)])
    assert lookup.find("ink") == str(tmp_path / "styles" / "ink.safetensors")
    assert lookup.find("styles/ink.pt") == str(tmp_path / "styles" / "ink.pt")
    assert torch.equal(lookup.vectors("ink", "clip_l", 768), V768)
    assert lookup.find("absent") is None and lookup.vectors("absent", "clip_l", 768) is None


def test_names_that_escape_the_embeddings_folder_are_not_found(tmp_path):
    inside, outside = tmp_path / "emb", tmp_path / "secret.pt"
    inside.mkdir()
    torch.save({"emb_params": V768}, str(outside))
    assert EmbeddingLookup([str(inside)]).find("../secret") is None
    assert os.path.exists(outside)


def test_a1111_pt_files_use_their_string_to_param_vectors(tmp_path):
    path = tmp_path / "a1111.pt"
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": V768}, "name": "x", "step": 3000}, str(path))
    assert torch.equal(EmbeddingLookup([str(tmp_path)]).vectors("a1111", "clip_l", 768), V768)


def test_sdxl_files_give_each_encoder_its_own_vectors():
    data = {"clip_l": V768, "clip_g": V1280}
    assert torch.equal(select_vectors(data, "clip_l", 768), V768)
    assert torch.equal(select_vectors(data, "clip_g", 1280), V1280)


def test_diffusers_bin_with_one_vector_is_one_token():
    assert select_vectors({"<my-token>": V768[0]}, "clip_l", 768).shape == (1, 768)


def test_embeddings_bundled_in_a_lora_are_concatenated():
    data = {"lora_te_x.alpha": torch.tensor(1.0),
            "bundle_emb.a.string_to_param.*": V768[:1], "bundle_emb.b.string_to_param.*": V768[1:]}
    assert torch.equal(select_vectors(data, "clip_l", 768), V768)
    data = {"bundle_emb.a.clip_l": V768, "bundle_emb.a.clip_g": V1280}
    assert torch.equal(select_vectors(data, "clip_g", 1280), V1280)


def test_a_list_of_dicts_keeps_the_tensors_of_the_encoder_width():
    data = [{"a": V768, "b": torch.ones(5)}, {"c": V768[0]}]
    assert select_vectors(data, "clip_l", 768).shape == (3, 768)


def test_old_pickles_that_need_code_fall_back_to_raw_float_data(tmp_path):
    path = tmp_path / "old.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02cnot.safe\nThing\nq\x00.")
        z.writestr("archive/data/0", V768.numpy().tobytes())
    assert torch.equal(EmbeddingLookup([str(tmp_path)]).vectors("old", "clip_l", 768), V768)


def test_a_file_without_tensors_is_rejected():
    with pytest.raises(ValueError):
        select_vectors({}, "clip_l", 768)
