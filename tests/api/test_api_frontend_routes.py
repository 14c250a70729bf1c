"""The small routes ComfyUI's official frontend calls while booting (api.md §10.12), with their minimal answers."""

from apitest_client import get, http, post


def test_the_frontend_boot_sequence_gets_the_answers_it_needs(server):
    stats = get(server, "/api/system_stats").json()
    assert stats["system"]["comfyui_version"] == "0.8.0" and stats["system"]["required_frontend_version"] == "1.35.9"
    assert stats["devices"][0]["type"] == "cpu" and stats["devices"][0]["vram_total"] > 0
    assert "kiln_version" in stats["system"]
    assert get(server, "/api/features").json() == {"supports_preview_metadata": True, "max_upload_size": 104857600}
    assert get(server, "/api/users").json() == {"storage": "server", "migrated": True}
    assert get(server, "/api/i18n").json() == {} and get(server, "/api/settings").json() == {}
    assert get(server, "/api/userdata?dir=workflows&recurse=true&split=false&full_info=true").status == 404
    assert get(server, "/api/extensions").json() == []
    assert get(server, "/api/global_subgraphs").json() == {}
    assert get(server, "/api/userdata/comfy.templates.json").status == 404
    assert "TestConst" in get(server, "/api/object_info").json()
    assert get(server, "/api/queue").json() == {"queue_running": [], "queue_pending": []}
    assert get(server, "/api/history?max_items=64").json() == {}
    assert get(server, "/api/jobs?status=in_progress,pending&limit=200&offset=0").json() == {
        "jobs": [], "pagination": {"offset": 0, "limit": 200, "total": 0, "has_more": False}}
    assert get(server, "/api/workflow_templates").json() == {}
    assert isinstance(get(server, "/templates/index.json").json(), list)
    assert post(server, "/api/settings/Comfy.InstalledVersion", data=b'"1.58.1"',
                headers={"Content-Type": "text/plain;charset=UTF-8"}).status == 200


def test_settings_are_stored_merged_and_read_back(server, base_dir):
    post(server, "/api/settings", {"Comfy.A": 1, "Comfy.B": "x"})
    post(server, "/api/settings/Comfy.B", "y")
    assert get(server, "/api/settings").json() == {"Comfy.A": 1, "Comfy.B": "y"}
    assert get(server, "/api/settings/Comfy.Unknown").json() is None
    assert (base_dir / "user" / "default" / "comfy.settings.json").read_text().startswith("{\n    ")


def test_object_info_for_one_class_and_for_an_unknown_class(server):
    one = get(server, "/object_info/TestConst").json()
    assert list(one) == ["TestConst"] and one["TestConst"]["input"]["required"]["value"][0] == "INT"
    assert get(server, "/object_info/Nope").json() == {}


def test_model_folders_and_embeddings_are_listed(server, base_dir):
    (base_dir / "models" / "embeddings" / "sub").mkdir(parents=True)
    (base_dir / "models" / "embeddings" / "sub" / "bad-hands.safetensors").write_bytes(b"")
    (base_dir / "models" / "checkpoints").mkdir(parents=True)
    (base_dir / "models" / "checkpoints" / "tiny.safetensors").write_bytes(b"")
    assert get(server, "/embeddings").json() == ["sub/bad-hands"]
    assert get(server, "/models").json()[0] == "checkpoints"
    assert get(server, "/models/checkpoints").json() == ["tiny.safetensors"]
    assert get(server, "/models/clip").status == 404
    folders = get(server, "/experiment/models").json()
    assert {"configs", "custom_nodes"}.isdisjoint(f["name"] for f in folders)
    files = get(server, "/experiment/models/checkpoints").json()
    assert [(f["name"], f["pathIndex"]) for f in files] == [("tiny.safetensors", 0)]


def test_single_user_mode_refuses_to_create_users_and_unknown_subgraphs_are_404(server):
    assert post(server, "/api/users", {"username": "bob"}).json() == {"error": "Multi-user mode is not supported"}
    assert get(server, "/api/global_subgraphs/abc").status == 404
    assert get(server, "/api/node_replacements").json() == {}


def test_internal_routes_list_folders_and_area_files_newest_first(server, base_dir):
    import os
    import time

    (base_dir / "output" / "old.png").write_bytes(b"1")
    (base_dir / "output" / "new.png").write_bytes(b"2")
    os.utime(base_dir / "output" / "old.png", (time.time() - 100, time.time() - 100))
    (base_dir / "output" / ".hidden").write_bytes(b"3")
    assert get(server, "/internal/files/output").json() == ["new.png", "old.png"]
    assert get(server, "/internal/files/bogus").status == 400
    assert "checkpoints" in get(server, "/internal/folder_paths").json()
    assert get(server, "/api/internal/folder_paths").status == 404
    assert http(server, "HEAD", "/api/queue").status == 200


def test_shipped_workflows_are_offered_as_templates(server, tmp_path):
    from engine.server import STATE

    (tmp_path / "wf").mkdir()
    (tmp_path / "wf" / "default.json").write_text('{"nodes": [], "links": []}')
    (tmp_path / "wf" / "img2img.json").write_text('{"nodes": [], "links": []}')
    server.app[STATE].workflows_dir = str(tmp_path / "wf")
    (category,) = get(server, "/templates/index.json").json()
    assert [t["name"] for t in category["templates"]] == ["default", "img2img"]
    assert get(server, "/templates/default.json").json() == {"nodes": [], "links": []}
    assert get(server, "/templates/..%2Fpyproject.json").status == 404
    assert get(server, "/templates/missing.json").status == 404


def test_safetensors_metadata_is_read_only_for_listed_model_files(server, base_dir):
    import json
    import struct

    header = json.dumps({"__metadata__": {"ss_network_dim": "8"}}).encode()
    (base_dir / "models" / "loras").mkdir(parents=True)
    (base_dir / "models" / "loras" / "x.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    assert get(server, "/view_metadata/loras?filename=x.safetensors").json() == {"ss_network_dim": "8"}
    assert get(server, "/view_metadata/loras?filename=../../x.safetensors").status == 404
    assert get(server, "/view_metadata/loras?filename=x.ckpt").status == 404
    assert get(server, "/view_metadata/nope?filename=x.safetensors").status == 404


def test_v2_userdata_lists_the_tree_directories_first(server):
    post(server, "/api/userdata/workflows%2FB.json", data=b"{}")
    post(server, "/api/userdata/a.json", data=b"{}")
    listing = get(server, "/api/v2/userdata").json()
    assert [(e["type"], e["path"]) for e in listing][:1] == [("directory", "workflows")]
    assert {e["path"] for e in listing if e["type"] == "file"} >= {"a.json", "workflows/B.json"}
    assert get(server, "/api/v2/userdata?path=missing").status == 404
    assert get(server, "/api/v2/userdata?path=a.json").status == 400


def test_the_log_console_returns_recent_lines_and_streams_to_subscribers(server):
    import asyncio
    import json
    import logging

    import aiohttp

    logging.getLogger("kiln.test").warning("first line")
    assert "first line\n" in get(server, "/internal/logs").json()
    assert get(server, "/internal/logs/raw").json()["size"] == {"cols": 80, "rows": 24}

    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(server.url + "/ws?clientId=console") as ws:
                await ws.receive()
                async with session.patch(server.url + "/internal/logs/subscribe",
                                         json={"clientId": "console", "enabled": True}) as r:
                    assert r.status == 200
                logging.getLogger("kiln.test").warning("streamed line")
                return json.loads((await asyncio.wait_for(ws.receive(), 5)).data)

    message = asyncio.run(scenario())
    assert message["type"] == "logs" and message["data"]["entries"][0]["m"] == "streamed line\n"


def test_pack_translations_templates_and_subgraphs_are_gathered(start_server, tmp_path):
    import json

    from engine.registry import PackResult

    pack = tmp_path / "my_pack"
    (pack / "locales" / "en").mkdir(parents=True)
    (pack / "locales" / "en" / "main.json").write_text(json.dumps({"hello": "Hello"}))
    (pack / "locales" / "en" / "nodeDefs.json").write_text(json.dumps({"MyNode": {"display_name": "Mine"}}))
    (pack / "example_workflows").mkdir()
    (pack / "example_workflows" / "demo.json").write_text('{"nodes": []}')
    (pack / "subgraphs").mkdir()
    (pack / "subgraphs" / "blur.json").write_text('{"definitions": {}}')
    server = start_server(prepare=lambda registry: registry.packs.append(PackResult("my_pack", str(pack), True, 0.0)))
    assert get(server, "/api/i18n").json() == {"en": {"hello": "Hello", "nodeDefs": {"MyNode": {"display_name": "Mine"}}}}
    assert get(server, "/api/workflow_templates").json() == {"my_pack": ["demo"]}
    assert get(server, "/api/workflow_templates/my_pack/demo.json").json() == {"nodes": []}
    assert get(server, "/api/workflow_templates/my_pack/..%2F..%2Fsecret.json").status == 404
    subgraphs = get(server, "/api/global_subgraphs").json()
    (key, summary), = subgraphs.items()
    assert summary == {"source": "custom_node", "name": "blur", "info": {"node_pack": "custom_nodes.my_pack"}}
    assert get(server, f"/api/global_subgraphs/{key}").json()["data"] == '{"definitions": {}}'
