"""The ComfyUI shims packs import: folder_paths, comfy.*, nodes members, server bridge, graph utils."""
from __future__ import annotations


import pytest

from engine.errors import Interrupted, PathEscape


@pytest.fixture
def shims(registry, tmp_path):
    import compat

    compat.install(registry)
    return registry


def test_folder_paths_reads_kiln_folders(shims, tmp_path):
    import folder_paths

    (tmp_path / "models" / "loras").mkdir(parents=True)
    (tmp_path / "models" / "loras" / "x.safetensors").write_bytes(b"")
    assert folder_paths.get_filename_list("loras") == ["x.safetensors"]
    assert folder_paths.get_full_path("loras", "x.safetensors") == str(tmp_path / "models" / "loras" / "x.safetensors")
    assert folder_paths.get_full_path("loras", "nope.safetensors") is None
    with pytest.raises(FileNotFoundError):
        folder_paths.get_full_path_or_raise("loras", "nope.safetensors")
    assert folder_paths.models_dir == str(tmp_path / "models")
    assert folder_paths.get_output_directory() == str(tmp_path / "output")
    assert ".safetensors" in folder_paths.supported_pt_extensions
    extra = tmp_path / "more_loras"
    folder_paths.add_model_folder_path("loras", str(extra), is_default=True)
    assert folder_paths.get_folder_paths("loras")[0] == str(extra)
    assert folder_paths.folder_names_and_paths["loras"][0][0] == str(extra)


def test_annotated_paths_are_contained_in_their_area(shims, tmp_path):
    import folder_paths

    assert folder_paths.annotated_filepath("a.png [output]") == ("a.png", str(tmp_path / "output"))
    assert folder_paths.get_annotated_filepath("sub/a.png") == str(tmp_path / "input" / "sub" / "a.png")
    with pytest.raises(PathEscape):
        folder_paths.get_annotated_filepath("../../../../etc/passwd")
    assert folder_paths.exists_annotated_filepath("../../etc/passwd") is False


def test_save_image_path_numbers_after_existing_files_and_refuses_escapes(shims, tmp_path):
    import folder_paths

    out = tmp_path / "output" / "run"
    out.mkdir(parents=True)
    (out / "img_00004_.png").write_bytes(b"")
    folder, name, counter, sub, prefix = folder_paths.get_save_image_path("run/img", str(tmp_path / "output"), 8, 8)
    assert (folder, name, counter, sub) == (str(out), "img", 5, "run")
    with pytest.raises(PathEscape):
        folder_paths.get_save_image_path("../../pwn/x", str(tmp_path / "output"))


def test_sampler_lists_types_and_nodes_members(shims):
    import comfy.samplers
    import nodes
    from comfy.comfy_types import IO

    assert len(comfy.samplers.KSampler.SAMPLERS) == 44 and comfy.samplers.KSampler.SAMPLERS[0] == "euler"
    assert comfy.samplers.KSampler.SCHEDULERS[-1] == "kl_optimal" and len(comfy.samplers.KSampler.SCHEDULERS) == 9
    assert IO.IMAGE == "IMAGE" and IO.ANY == "*" and not (IO.ANY != "LATENT")
    assert nodes.MAX_RESOLUTION == 16384
    assert "TestConst" in nodes.NODE_CLASS_MAPPINGS and nodes.NODE_DISPLAY_NAME_MAPPINGS["TestConst"] == "TestConst"


def test_interrupt_functions_act_on_the_running_prompt(shims):
    import comfy.model_management as mm
    import nodes
    from engine import context

    assert mm.InterruptProcessingException is Interrupted
    mm.interrupt_current_processing()          # idle: no effect
    assert not mm.processing_interrupted()
    import threading

    event = threading.Event()
    context.set_active_interrupt(event)
    try:
        nodes.interrupt_processing()
        assert mm.processing_interrupted()
        with pytest.raises(Interrupted):
            mm.throw_exception_if_processing_interrupted()
        assert not event.is_set()              # raising clears the flag
    finally:
        context.set_active_interrupt(None)


def test_prompt_server_instance_forwards_send_sync_and_on_prompt_hooks(shims):
    from server import PromptServer

    sent = []
    bridge = shims.bridge
    assert PromptServer.instance is bridge
    bridge.sender = lambda event, data, sid: sent.append((event, data, sid))
    PromptServer.instance.send_sync("my.event", {"x": 1}, "client")
    PromptServer.instance.send_progress_text("working", "5")
    assert sent == [("my.event", {"x": 1}, "client"), ("progress_text", {"text": "working", "node_id": "5"}, None)]
    PromptServer.instance.add_on_prompt_handler(lambda body: dict(body, seen=True))
    PromptServer.instance.add_on_prompt_handler(lambda body: 1 / 0)   # a failing hook is skipped
    assert bridge.trigger_on_prompt({"prompt": {}}) == {"prompt": {}, "seen": True}


def test_graph_builder_makes_prefixed_api_nodes(shims):
    from comfy_execution.graph_utils import GraphBuilder, is_link

    g = GraphBuilder(prefix="7.0.0.")
    a = g.node("TestConst", value=1)
    b = g.node("TestAdd", a=a.out(0), b=a.out(0))
    b.set_override_display_id("7")
    assert is_link(a.out(0)) and a.id == "7.0.0.1"
    assert g.finalize() == {"7.0.0.1": {"class_type": "TestConst", "inputs": {"value": 1}},
                            "7.0.0.2": {"class_type": "TestAdd", "inputs": {"a": ["7.0.0.1", 0], "b": ["7.0.0.1", 0]},
                                        "override_display_id": "7"}}


def test_node_helpers_hash_and_open_images(shims, tmp_path):
    import node_helpers
    from PIL import Image

    Image.new("RGB", (2, 2)).save(tmp_path / "x.png")
    with node_helpers.pillow(Image.open, str(tmp_path / "x.png")) as img:
        assert img.size == (2, 2)
    assert node_helpers.hasher()().name == "sha256"


def test_packs_can_call_core_nodes_through_node_class_mappings(shims):
    import nodes

    add = nodes.NODE_CLASS_MAPPINGS["TestAdd"]
    assert add.RETURN_TYPES == ("INT",) and add.INPUT_TYPES()["required"]["a"] == ["INT"]
    assert add().execute(a=2, b=3) == (5,)
    assert add().add(a=1, b=1) == (2,)          # ComfyUI method names reach the node function
    assert nodes.NODE_CLASS_MAPPINGS["TestShow"]().run(value=4) == {"ui": {"text": ["4"]}, "result": None,
                                                                     "expand": None}


def test_core_node_classes_are_attributes_of_the_nodes_module(shims):
    import nodes
    from nodes import TestAdd

    assert TestAdd is nodes.NODE_CLASS_MAPPINGS["TestAdd"]
    with pytest.raises(ImportError):
        from nodes import NoSuchNode  # noqa: F401
