"""Model folders, extra_model_paths.yaml, path containment, native node declarations and object_info."""
from __future__ import annotations

import os
from typing import Annotated

import pytest

from engine.cache import RamCache, CacheEntry, make_cache, LRUCache, ClassicCache, NoCache
from engine.config import RuntimeConfig
from engine.errors import PathEscape
from engine.paths import Paths, contained
from engine.registry import Registry
from engine.schema import (Boolean, Combo, Float, Hidden, Int, MAX_RESOLUTION, Output, Socket, String, files_in,
                           node)


def test_model_listing_is_recursive_filtered_sorted_and_refreshes_when_files_change(tmp_path):
    paths = Paths(str(tmp_path))
    ckpt = tmp_path / "models" / "checkpoints"
    (ckpt / "sd" / ".git").mkdir(parents=True)
    (ckpt / "b.safetensors").write_bytes(b"")
    (ckpt / "sd" / "a.CKPT").write_bytes(b"")
    (ckpt / "sd" / ".git" / "x.safetensors").write_bytes(b"")
    (ckpt / "readme.txt").write_text("")
    (tmp_path / "output" / "checkpoints").mkdir(parents=True)
    (tmp_path / "output" / "checkpoints" / "saved.safetensors").write_bytes(b"")
    assert paths.list_files("checkpoints") == ["b.safetensors", "saved.safetensors", "sd/a.CKPT"]
    (ckpt / "sd" / "c.pt").write_bytes(b"")
    assert "sd/c.pt" in paths.list_files("checkpoints")
    assert paths.full_path("checkpoints", "saved.safetensors") == str(tmp_path / "output" / "checkpoints" /
                                                                      "saved.safetensors")
    with pytest.raises(FileNotFoundError):
        paths.full_path("checkpoints", "../../etc/passwd")
    assert paths.folder_paths("clip") == paths.folder_paths("text_encoders")


def test_extra_model_paths_yaml_adds_folders_in_order(tmp_path):
    other = tmp_path / "a1111"
    (other / "models" / "Lora").mkdir(parents=True)
    (other / "models" / "Lora" / "style.safetensors").write_bytes(b"")
    yaml_file = tmp_path / "extra.yaml"
    yaml_file.write_text(f"""
a111:
    base_path: {other}
    loras: |
        models/Lora
        models/LyCORIS
    clip: models/clip
first:
    is_default: true
    base_path: rel
    checkpoints: ckpts
    my_new_folder: stuff
skipped:
""")
    paths = Paths.from_config(RuntimeConfig(base_directory=str(tmp_path / "base"),
                                            extra_model_paths_config=(str(yaml_file),)))
    assert paths.folder_paths("loras")[-2:] == [str(other / "models" / "Lora"), str(other / "models" / "LyCORIS")]
    assert paths.list_files("loras") == ["style.safetensors"]
    assert paths.folder_paths("text_encoders")[-1] == str(other / "models" / "clip")
    assert paths.folder_paths("checkpoints")[0] == str(tmp_path / "rel" / "ckpts")
    assert paths.folder_paths("my_new_folder") == [str(tmp_path / "rel" / "stuff")]


def test_containment_refuses_traversal_absolute_paths_and_symlink_escapes(tmp_path):
    root = tmp_path / "input"
    root.mkdir()
    (root / "a..png").write_bytes(b"")
    os.symlink("/etc", root / "link")
    assert contained(str(root), "a..png") == str(root / "a..png")
    assert contained(str(root), "sub/new.png") == str(root / "sub" / "new.png")
    for bad in ("../x", "a/../../x", "/etc/passwd", "\\\\server\\share", "C:\\x", "x\x00y", "link/passwd",
                "..\\x"):
        with pytest.raises(PathEscape):
            contained(str(root), bad)


def test_native_declarations_serialize_only_the_options_given(tmp_path):
    @node("TestDeclared", category="test/decl", display_name="Declared", description="A declared node.",
          outputs=[Output("IMAGE", tooltip="the image"), Output("INT", name="count")], deprecated=True)
    def declared(
        model: Annotated[object, Socket("MODEL", tooltip="the model")],
        size: Annotated[int, Int(default=512, min=16, max=MAX_RESOLUTION, step=8)],
        seed: Annotated[int, Int(default=0, min=0, max=2**64 - 1, control_after_generate=True)],
        cfg: Annotated[float, Float(default=8.0, min=0.0, max=100.0, step=0.1, round=0.01)],
        text: Annotated[str, String(multiline=True, dynamic_prompts=True)],
        flag: Annotated[bool, Boolean(default=False, label_on="yes", label_off="no")],
        ckpt: Annotated[str, Combo(files_in("checkpoints"), tooltip="file")],
        channel: Annotated[str, Combo(["red", "green"], style="combo", default="red")],
        mask: Annotated[object, Socket("MASK", optional=True)],
        prompt: Annotated[dict, Hidden("PROMPT")],
        ctx=None,
    ):
        return None

    reg = Registry(Paths(str(tmp_path)))
    reg.add(declared.spec, core=True)
    info = reg.object_info()["TestDeclared"]
    assert info["input"] == {
        "required": {"model": ["MODEL", {"tooltip": "the model"}],
                     "size": ["INT", {"default": 512, "min": 16, "max": 16384, "step": 8}],
                     "seed": ["INT", {"default": 0, "min": 0, "max": 18446744073709551615,
                                      "control_after_generate": True}],
                     "cfg": ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}],
                     "text": ["STRING", {"multiline": True, "dynamicPrompts": True}],
                     "flag": ["BOOLEAN", {"default": False, "label_on": "yes", "label_off": "no"}],
                     "ckpt": [[], {"tooltip": "file"}],
                     "channel": ["COMBO", {"multiselect": False, "options": ["red", "green"], "default": "red"}]},
        "optional": {"mask": ["MASK"]},
        "hidden": {"prompt": "PROMPT"}}
    assert info["input_order"] == {"required": ["model", "size", "seed", "cfg", "text", "flag", "ckpt", "channel"],
                                   "optional": ["mask"], "hidden": ["prompt"]}
    assert info["output"] == ["IMAGE", "INT"] and info["output_name"] == ["IMAGE", "count"]
    assert info["output_tooltips"] == ["the image", ""]
    assert info["display_name"] == "Declared" and info["python_module"] == "nodes"
    assert info["deprecated"] is True and "experimental" not in info and "api_node" not in info
    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    (tmp_path / "models" / "checkpoints" / "m.safetensors").write_bytes(b"")
    assert reg.object_info()["TestDeclared"]["input"]["required"]["ckpt"][0] == ["m.safetensors"]


def test_v3_nodes_serialize_link_specs_with_an_options_dict(tmp_path):
    @node("TestV3", category="test", outputs=[Output("IMAGE")], v3=True)
    def v3(image: Annotated[object, Socket("IMAGE")]):
        return image

    assert v3.spec.input_types(None) == {"required": {"image": ["IMAGE", {}]}}


def test_a_parameter_without_an_input_annotation_is_rejected():
    with pytest.raises(TypeError, match="needs an Annotated"):
        @node("TestBad", category="test", outputs=[])
        def bad(x: int):
            return None


def test_cache_policies_are_built_from_the_cli_values():
    assert isinstance(make_cache("classic"), ClassicCache) and isinstance(make_cache(("lru", 0)), ClassicCache)
    assert isinstance(make_cache(("lru", 5)), LRUCache) and isinstance(make_cache("none"), NoCache)
    assert isinstance(make_cache(("ram", 2.0)), RamCache)


def test_the_ram_policy_evicts_the_oldest_largest_entries_when_free_memory_is_low():
    free = {"bytes": 10 * 1024 ** 3}
    cache = RamCache(4.0, free_ram=lambda: free["bytes"])

    class Blob:
        def __init__(self, n):
            self.nbytes, self.shape, self.device = n, (n,), "cuda"

    cache.start_prompt(set(), set())
    cache.set("old", CacheEntry(None, [[Blob(100)]]))
    cache.start_prompt(set(), set())
    cache.set("new", CacheEntry(None, [[Blob(100)]]))
    cache.after_node()
    assert set(cache.entries) == {"old", "new"}          # plenty of RAM: keep everything
    free["bytes"] = 1 * 1024 ** 3

    def freed():
        free["bytes"] += 4 * 1024 ** 3                     # each eviction gives memory back

    cache.entries = _Tracking(cache.entries, freed)
    cache.after_node()
    assert list(cache.entries) == ["new"]


class _Tracking(dict):
    """A dict that reports deletions (stands in for memory being released)."""

    def __init__(self, data, on_delete):
        super().__init__(data)
        self.on_delete = on_delete

    def __delitem__(self, key):
        super().__delitem__(key)
        self.on_delete()


def test_symlinked_model_folders_are_followed_and_link_loops_end(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    (store / "big.safetensors").write_bytes(b"")
    loras = tmp_path / "models" / "loras"
    loras.mkdir(parents=True)
    os.symlink(store, loras / "shared")
    os.symlink(loras, store / "back")          # a loop: store/back -> loras -> shared -> store
    names = Paths(str(tmp_path)).list_files("loras")
    assert "shared/big.safetensors" in names and len(names) < 10
