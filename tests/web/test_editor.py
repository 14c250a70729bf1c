"""The web editor in a real browser against a stand-in API (see webtools.FakeServer)."""

import json

import pytest

from webtools import FIXTURES, build_txt2img, fixture_json


def test_page_loads_the_default_workflow_without_console_errors(editor):
    assert sorted(editor.node_ids()) == [3, 4, 5, 6, 7, 8, 9]
    assert editor.js("() => app.graph.links.size") == 9
    editor.screenshot("editor-default-workflow.png")
    assert editor.console_errors == []


def test_a_txt2img_graph_built_with_the_mouse_queues_and_shows_progress_and_the_image(editor):
    n = build_txt2img(editor)
    assert editor.js("() => app.graph.links.size") == 9
    editor.page.locator("#graph-canvas").focus()
    editor.page.keyboard.press("Control+Enter")
    editor.page.wait_for_function("() => document.querySelector('#queue-size') !== null")
    editor.page.wait_for_timeout(300)
    (sent,) = editor.server.prompts
    prompt = sent["prompt"]
    ks = prompt[str(n["ks"])]
    assert ks["class_type"] == "KSampler"
    assert ks["inputs"]["steps"] == 18 and ks["inputs"]["seed"] == 42
    assert ks["inputs"]["model"] == [str(n["ck"]), 0] and ks["inputs"]["latent_image"] == [str(n["lat"]), 0]
    assert prompt[str(n["pos"])]["inputs"]["text"] == "a red circle on a blue square"
    assert prompt[str(n["save"])]["inputs"]["images"] == [str(n["dec"]), 0]
    assert sent["client_id"] == "testclient"
    assert sent["extra_data"]["extra_pnginfo"]["workflow"]["nodes"]
    assert editor.widget_value(n["ks"], "seed") == 42, "a fixed seed stays"

    pid, srv = sent["prompt_id"], editor.server
    srv.send("execution_start", {"prompt_id": pid, "timestamp": 0})
    srv.send("executing", {"node": str(n["ks"]), "display_node": str(n["ks"]), "prompt_id": pid})
    srv.send("progress", {"value": 9, "max": 18, "prompt_id": pid, "node": str(n["ks"])})
    srv.send("progress_state", {"prompt_id": pid, "nodes": {str(n["ks"]): {"value": 9, "max": 18, "state": "running"}}})
    srv.send_preview(str(n["ks"]), pid, (FIXTURES / "workflow.png").read_bytes())
    editor.page.wait_for_function("(id) => app.view.runtime.get(String(id))?.preview?.complete", arg=n["ks"])
    rt = editor.js("(id) => { const r = app.view.runtime.get(String(id)); return {running: r.running, progress: r.progress}; }", n["ks"])
    assert rt == {"running": True, "progress": 0.5}
    assert editor.page.locator("#overall-progress").is_visible()
    editor.screenshot("editor-running.png")

    image = {"filename": "Kiln_00001_.png", "subfolder": "", "type": "output"}
    srv.send("executing", {"node": str(n["save"]), "display_node": str(n["save"]), "prompt_id": pid})
    srv.send("executed", {"node": str(n["save"]), "display_node": str(n["save"]), "output": {"images": [image]}, "prompt_id": pid})
    srv.send("execution_success", {"prompt_id": pid, "timestamp": 0})
    srv.send("executing", {"node": None, "prompt_id": pid})
    editor.page.wait_for_function("(id) => app.view.runtime.get(String(id))?.images?.[0]?.complete", arg=n["save"])
    assert not editor.page.locator("#overall-progress").is_visible()
    editor.page.click("#panel-button")
    assert "Kiln_00001_.png" in editor.page.locator("#gallery img").first.get_attribute("src")
    editor.screenshot("editor-finished-image.png")
    assert editor.console_errors == []


def test_an_incompatible_link_is_refused_with_a_hint(editor):
    editor.drag(editor.slot(4, "out", 1), editor.slot(8, "in", 0))  # CLIP → VAEDecode.samples (LATENT)
    assert editor.js("() => app.graph.nodes.get(8).inputs[0].link") == 7, "the existing link is untouched"
    toast = editor.page.locator(".toast.error")
    assert "CLIP output cannot connect to LATENT input" in toast.inner_text()


def test_a_validation_error_outlines_its_node_with_the_message_and_no_dialog(editor):
    dialogs = []
    editor.page.on("dialog", lambda d: dialogs.append(d.message))
    editor.page.click("#queue-button")  # the default workflow names model.safetensors, not in the list
    editor.page.wait_for_function("() => app.view.runtime.get('4')?.errors?.length")
    errors = editor.js("() => app.view.runtime.get('4').errors")
    assert errors[0].startswith("Value not in list: ckpt_name: 'model.safetensors' not in")
    assert "Prompt outputs failed validation" in editor.page.locator(".toast.error").inner_text()
    assert dialogs == []
    editor.screenshot("editor-validation-error.png")


def test_undo_and_redo_restore_a_deleted_node_and_its_links(editor):
    editor.page.mouse.click(*editor.title_point(8))
    editor.page.keyboard.press("Delete")
    assert 8 not in editor.node_ids()
    assert editor.js("() => app.graph.links.size") == 6
    editor.page.keyboard.press("Control+z")
    assert 8 in editor.node_ids()
    assert editor.js("() => app.graph.links.size") == 9
    editor.page.keyboard.press("Control+y")
    assert 8 not in editor.node_ids()


def test_save_then_reopen_by_drag_and_drop_gives_an_identical_graph(editor):
    editor.drag(editor.title_point(5), (700, 800))  # move a node so the file differs from the default
    before = editor.js("() => app.serialize()")
    with editor.page.expect_download() as dl:
        editor.page.click("#save-button")
        editor.page.fill(".dialog input", "mine")
        editor.page.press(".dialog input", "Enter")
    assert dl.value.suggested_filename == "mine.json"
    data = open(dl.value.path(), "rb").read()
    editor.page.click("#clear-button")
    assert editor.node_ids() == []
    editor.drop_file(data, "mine.json", "application/json")
    assert editor.js("() => app.serialize()") == before


def test_a_png_with_an_embedded_workflow_opens_by_drag_and_drop(editor):
    editor.page.click("#clear-button")
    editor.drop_file((FIXTURES / "workflow.png").read_bytes(), "workflow.png", "image/png")
    assert sorted(editor.node_ids()) == [3, 4, 5, 6, 7, 8, 9]
    assert editor.js("() => app.graph.nodes.get(6).widget('text').value").startswith("beautiful scenery")


def test_an_api_prompt_json_opens_as_a_laid_out_graph(editor):
    data = (FIXTURES / "default_prompt.json").read_bytes()
    editor.drop_file(data, "api.json", "application/json")
    assert sorted(editor.node_ids()) == [3, 4, 5, 6, 7, 8, 9]
    assert editor.js("() => app.graph.links.size") == 9


def test_right_click_menu_adds_a_node_by_category(editor):
    editor.page.mouse.click(300, 820, button="right")
    editor.page.get_by_role("menuitem", name="Add Node").hover()
    editor.page.get_by_role("menuitem", name="latent", exact=True).hover()
    editor.page.get_by_role("menuitem", name="VAE Encode").click()
    assert len(editor.nodes_of("VAEEncode")) == 1


def test_dropping_a_link_on_empty_canvas_opens_a_filtered_search_and_connects_the_choice(editor):
    editor.drag(editor.slot(8, "out", 0), (1200, 750))
    items = editor.page.locator("#node-search .search-item")
    names = [items.nth(i).get_attribute("data-type") for i in range(items.count())]
    assert "SaveImage" in names and "VAEEncode" in names and "KSampler" not in names
    editor.page.locator("#node-search input").fill("preview")
    editor.page.locator("#node-search input").press("Enter")
    (pid,) = editor.nodes_of("PreviewImage")
    assert editor.js("(id) => app.graph.links.get(app.graph.nodes.get(id).inputs[0].link).origin_id", pid) == 8


def test_a_widget_converted_to_an_input_accepts_a_link_and_converts_back(editor):
    editor.page.mouse.click(*editor.title_point(5), button="right")
    editor.page.get_by_role("menuitem", name="Convert Widget to Input").hover()
    editor.page.get_by_role("menuitem", name="width").click()
    assert editor.js("() => app.graph.nodes.get(5).inputs.map(i => i.name)") == ["width"]
    assert editor.widget_rect(5, "width") is None, "the widget is hidden while converted"
    editor.page.mouse.click(*editor.title_point(5), button="right")
    editor.page.get_by_role("menuitem", name="Convert Input to Widget").hover()
    editor.page.get_by_role("menuitem", name="width").click()
    assert editor.js("() => app.graph.nodes.get(5).inputs.length") == 0


def test_box_select_copy_paste_keeps_internal_links(editor):
    editor.js("() => { app.view.fitView(); }")
    a, b = editor.js("() => [app.view.nodeClientRect(8), app.view.nodeClientRect(9)]")
    editor.page.keyboard.down("Control")
    editor.drag((a["x"] - 10, a["y"] - 10), (b["x"] + b["width"] + 10, max(a["y"] + a["height"], b["y"] + b["height"]) + 10))
    editor.page.keyboard.up("Control")
    assert sorted(editor.js("() => [...app.view.selected]")) == [8, 9]
    editor.page.keyboard.press("Control+c")
    editor.page.mouse.move(400, 800)
    editor.page.keyboard.press("Control+v")
    new = sorted(set(editor.node_ids()) - {3, 4, 5, 6, 7, 8, 9})
    assert len(new) == 2
    assert editor.js("() => app.graph.links.size") == 10, "only the link between the copies is recreated"


def test_mute_bypass_and_collapse_shortcuts_toggle_the_selected_node(editor):
    editor.page.mouse.click(*editor.title_point(8))
    editor.page.keyboard.press("Control+m")
    assert editor.js("() => app.graph.nodes.get(8).mode") == 2
    editor.page.keyboard.press("Control+b")
    assert editor.js("() => app.graph.nodes.get(8).mode") == 4
    editor.page.keyboard.press("Control+b")
    assert editor.js("() => app.graph.nodes.get(8).mode") == 0
    editor.page.keyboard.press("Alt+c")
    assert editor.js("() => app.graph.nodes.get(8).flags.collapsed") is True
    editor.page.keyboard.press("Control+g")
    assert editor.js("() => app.graph.groups.length") == 1


def test_renaming_a_node_by_double_clicking_its_title(editor):
    editor.page.mouse.dblclick(*editor.title_point(8))
    editor.page.locator(".widget-editor").fill("Decode latent")
    editor.page.locator(".widget-editor").press("Enter")
    assert editor.js("() => app.serialize().nodes.find(n => n.id === 8).title") == "Decode latent"


def test_load_image_uploads_a_file_and_previews_it(editor):
    choosers = []
    # Subscribe before anything else: enabling file-chooser interception is asynchronous.
    editor.page.on("filechooser", lambda chooser: choosers.append(chooser))
    li = editor.add_by_search("load image", (1150, 560))
    r = editor.widget_rect(li, "upload")
    editor.page.mouse.click(r["x"] + r["width"] / 2, r["y"] + r["height"] / 2)
    for _ in range(50):
        if choosers:
            break
        editor.page.wait_for_timeout(100)
    assert len(choosers) == 1, "clicking the upload widget opens the file chooser"
    choosers[0].set_files(str(FIXTURES / "workflow.png"))
    editor.page.wait_for_function("(id) => app.graph.nodes.get(id).widget('image').value === 'workflow.png'", arg=li)
    assert "workflow.png" in editor.server.uploads
    editor.page.wait_for_function("(id) => app.view.runtime.get(String(id))?.images?.[0]?.complete", arg=li)


def test_batch_count_queues_several_prompts_and_randomizes_the_seed_between_them(editor):
    editor.js("() => { app.graph.nodes.get(4).widget('ckpt_name').value = 'kiln-demo-shapes.safetensors'; }")
    editor.page.fill("#batch-count", "3")
    editor.page.click("#queue-button")
    editor.page.wait_for_function("() => document.querySelectorAll('.toast.error').length === 0")
    editor.page.wait_for_timeout(500)
    seeds = [p["prompt"]["3"]["inputs"]["seed"] for p in editor.server.prompts]
    assert len(seeds) == 3 and len(set(seeds)) == 3


def test_the_graph_is_autosaved_and_restored_after_a_reload(editor):
    editor.drag(editor.title_point(5), (200, 800))
    pos = editor.js("() => app.graph.nodes.get(5).pos")
    editor.page.wait_for_timeout(400)
    editor.page.reload()
    editor.page.wait_for_selector("body[data-ready=true]")
    assert editor.js("() => app.graph.nodes.get(5).pos") == pos


def test_the_editor_reconnects_by_itself_when_the_socket_drops(editor):
    editor.server.sockets.pop().close()
    editor.page.wait_for_function("() => document.querySelector('#connection').textContent.startsWith('reconnecting')")
    editor.page.wait_for_function("() => app.api.connected", timeout=5000)
    assert editor.page.locator("#connection").inner_text() == "connected"


def test_workflows_saved_to_the_server_are_listed_and_reopen(editor):
    editor.page.click("#save-server-button")
    editor.page.fill(".dialog input", "flow one")
    editor.page.press(".dialog input", "Enter")
    editor.page.wait_for_function("() => true")
    editor.page.wait_for_timeout(200)
    assert "workflows/flow one.json" in editor.server.user_files
    saved = json.loads(editor.server.user_files["workflows/flow one.json"])
    editor.page.click("#clear-button")
    editor.page.click("#workflows-button")
    editor.page.get_by_role("menuitem", name="flow one").click()
    editor.page.wait_for_function("() => app.graph.nodes.size === 7")
    assert editor.js("() => app.serialize().nodes") == saved["nodes"]


def test_panning_a_500_node_graph_stays_smooth(editor):
    editor.js("""() => {
        app.graph.clear();
        for (let i = 0; i < 500; i++) {
            const n = app.graph.addNode(i % 2 ? 'KSampler' : 'EmptyLatentImage', [(i % 25) * 280, Math.floor(i / 25) * 320]);
            if (i % 2) app.graph.connect(n.id - 1, 0, n.id, 3);
        }
    }""")
    results = {}
    for scale in (0.6, 0.2):  # widgets and text drawn / the whole graph in view
        editor.js("(s) => { app.view.ds = {scale: s, offset: [0, 0]}; app.view.dirty(); }", scale)
        results[scale] = stats = editor.pan_frame_times()
        assert editor.js("() => app.view.ds.offset") != [0, 0], "the view moved"
        print(f"\n500-node pan at zoom {scale}: median draw {stats['median_draw_ms']:.2f} ms over {stats['draws']} frames, "
              f"median frame interval {stats['median_frame_interval_ms']:.2f} ms (target <= 16 ms)")
        editor.screenshot(f"editor-500-nodes-zoom-{scale}.png")
    assert editor.js("() => app.view.selected.size") == 0, "middle-drag pans without grabbing nodes"
    for stats in results.values():
        assert stats["draws"] > 20
        assert stats["median_draw_ms"] <= 16


def test_an_existing_link_can_be_dragged_to_another_input_or_dropped_to_delete_it(editor):
    editor.page.click("#clear-button")
    ids = editor.js("""() => {
        const a = app.graph.addNode('ImageInvert', [100, 100]), b = app.graph.addNode('ImageInvert', [450, 60]);
        const c = app.graph.addNode('ImageInvert', [450, 300]);
        app.graph.connect(a.id, 0, b.id, 0); app.view.ds = {scale: 1, offset: [0, 0]}; app.commit();
        return [a.id, b.id, c.id]; }""")
    a, b, c = ids
    editor.drag(editor.slot(b, "in", 0), editor.slot(c, "in", 0))
    assert editor.js("([b, c]) => [app.graph.nodes.get(b).inputs[0].link, app.graph.links.get(app.graph.nodes.get(c).inputs[0].link)?.origin_id]", [b, c]) == [None, a]
    editor.drag(editor.slot(c, "in", 0), (900, 700))
    assert editor.js("() => app.graph.links.size") == 0
    editor.page.keyboard.press("Control+z")
    assert editor.js("() => app.graph.links.size") == 1


def test_an_execution_error_marks_the_failing_node_with_its_message(editor):
    editor.server.send("execution_start", {"prompt_id": "p1", "timestamp": 0})
    editor.server.send("executing", {"node": "8", "display_node": "8", "prompt_id": "p1"})
    editor.server.send("execution_error", {"prompt_id": "p1", "node_id": "8", "node_type": "VAEDecode", "executed": [],
                                           "exception_message": "shapes do not match\n", "exception_type": "RuntimeError",
                                           "traceback": [], "current_inputs": {}, "current_outputs": []})
    editor.page.wait_for_function("() => app.view.runtime.get('8')?.errors?.length")
    assert editor.js("() => app.view.runtime.get('8').errors") == ["RuntimeError: shapes do not match"]
    assert "Error in VAEDecode #8" in editor.page.locator(".toast.error").inner_text()


def _pending_and_history(server):
    wf = fixture_json("default_workflow.json")
    wf["nodes"] = wf["nodes"][:3]
    server.pending = [[7, "pending-1", {}, {"client_id": "testclient"}, ["9"]]]
    server.history = {"done-1": {"prompt": [5, "done-1", {}, {"extra_pnginfo": {"workflow": wf}}, ["9"]],
                                 "outputs": {"9": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}},
                                 "status": {"status_str": "success", "completed": True, "messages": []}, "meta": {}}}


@pytest.mark.server_setup.with_args(_pending_and_history)
def test_the_queue_panel_cancels_pending_prompts_and_reopens_past_workflows(editor):
    editor.page.click("#panel-button")
    items = editor.page.locator("#queue-list .queue-item")
    assert items.nth(0).inner_text().startswith("#7 pending")
    assert items.nth(1).inner_text().startswith("#5 success · 1 image")
    items.nth(0).get_by_role("button", name="Cancel").click()
    editor.page.wait_for_function("() => document.querySelectorAll('#queue-list .queue-item').length === 1")
    assert ("POST", "/queue", '{"delete":["pending-1"]}') in editor.server.calls
    editor.page.locator("#queue-list .queue-item").get_by_role("button", name="Load").click()
    assert sorted(editor.node_ids()) == [3, 4, 5]
    editor.page.click("#interrupt-button")
    editor.page.wait_for_timeout(200)
    assert any(c[1] == "/interrupt" for c in editor.server.calls)


def _extension(server):
    server.extensions["/extensions/demo_pack/hello.js"] = """
        import { app } from "/scripts/app.js";
        app.registerExtension({
            name: "demo.hello",
            setup() { window.__extensionSetup = true; },
            nodeCreated(node) { node.title = "Made by extension"; },
        });"""


@pytest.mark.server_setup.with_args(_extension)
def test_web_extensions_from_custom_node_packs_load_and_get_their_hooks_called(editor):
    assert editor.js("() => window.__extensionSetup") is True
    node = editor.add_by_search("invert", (300, 820))
    assert editor.js("(id) => app.graph.nodes.get(id).title", node) == "Made by extension"
    assert editor.console_errors == []


def test_export_api_downloads_the_converted_prompt(editor):
    with editor.page.expect_download() as dl:
        editor.page.click("#export-api-button")
    prompt = json.loads(open(dl.value.path()).read())
    expected = fixture_json("default_prompt.json")
    assert prompt == expected


def test_hovering_an_input_shows_its_tooltip(editor):
    r = editor.widget_rect(4, "ckpt_name")
    editor.page.mouse.move(r["x"] + 40, r["y"] + r["height"] / 2)
    editor.page.wait_for_selector(".tooltip")
    assert editor.page.locator(".tooltip").inner_text() == "checkpoint file to load"


def test_dragging_a_group_title_moves_the_nodes_inside_it(editor):
    editor.js("() => { app.view.ds = {scale: 1, offset: [0, 0]}; app.graph.addGroup([0, 420, 380, 200], 'Loaders'); app.commit(); }")
    before = editor.js("() => [app.graph.nodes.get(4).pos, app.graph.nodes.get(3).pos]")
    gx, gy = editor.js("() => app.view.toClient(20, 432)")
    editor.drag((gx, gy), (gx + 100, gy + 50))
    after = editor.js("() => [app.graph.nodes.get(4).pos, app.graph.nodes.get(3).pos]")
    assert after[0] == [before[0][0] + 100, before[0][1] + 50], "the checkpoint loader inside moved along"
    assert after[1] == before[1], "the KSampler outside stayed"
    assert editor.js("() => app.graph.groups[0].bounding") == [100, 470, 380, 200]


def test_a_reroute_point_can_be_inserted_from_a_link_midpoint(editor):
    x, y = editor.js("() => app.view.linkMidClientPos(9)")  # VAEDecode → SaveImage
    editor.page.mouse.click(x, y)
    editor.page.get_by_role("menuitem", name="Add Reroute").click()
    (rr,) = editor.nodes_of("Reroute")
    assert editor.js("(id) => app.graph.nodes.get(id).outputs[0].type", rr) == "IMAGE"
    prompt = editor.js("() => app.buildPrompt()")
    assert prompt["9"]["inputs"]["images"] == ["8", 0], "the reroute is invisible to the server"
    editor.page.keyboard.press("Control+z")
    assert editor.nodes_of("Reroute") == []


def test_a_two_finger_pinch_zooms_around_the_fingers(editor):
    editor.js("() => { app.view.ds = {scale: 1, offset: [0, 0]}; }")
    anchor = editor.js("() => app.view.toGraph(700, 600)")
    editor.js("""() => {
        const c = document.getElementById('graph-canvas');
        const ev = (type, id, x) => c.dispatchEvent(new PointerEvent(type, {pointerId: id, pointerType: 'touch', clientX: x,
            clientY: 600, bubbles: true, isPrimary: id === 1}));
        ev('pointerdown', 1, 650); ev('pointerdown', 2, 750);
        ev('pointermove', 1, 600); ev('pointermove', 2, 800);
        ev('pointerup', 1, 600); ev('pointerup', 2, 800);
    }""")
    assert editor.js("() => app.view.ds.scale") == 2
    after = editor.js("() => app.view.toGraph(700, 600)")
    assert [round(v, 6) for v in after] == [round(v, 6) for v in anchor], "the point between the fingers stays put"


def test_live_previews_are_requested_until_switched_off_and_the_choice_is_stored(editor):
    editor.js("() => { app.graph.nodes.get(4).widget('ckpt_name').value = 'kiln-demo-shapes.safetensors'; }")
    editor.page.click("#queue-button")
    editor.page.wait_for_timeout(300)
    assert editor.server.prompts[-1]["extra_data"]["preview_method"] == "auto"
    editor.page.uncheck("#live-preview")
    editor.page.click("#queue-button")
    editor.page.wait_for_timeout(300)
    assert "preview_method" not in editor.server.prompts[-1]["extra_data"]
    assert editor.server.settings == {"Kiln.LivePreview": False}


def test_long_value_lists_can_be_filtered_by_typing(editor):
    r = editor.widget_rect(3, "sampler_name")
    editor.page.mouse.click(r["x"] + r["width"] / 2, r["y"] + r["height"] / 2)
    editor.page.get_by_role("textbox", name="Filter").fill("dpmpp_2m_sde_g")
    editor.page.get_by_role("textbox", name="Filter").press("Enter")
    assert editor.widget_value(3, "sampler_name") == "dpmpp_2m_sde_gpu"
