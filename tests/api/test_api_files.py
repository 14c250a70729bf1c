"""Uploads, /view and user data: round trips, naming rules, containment (S6), content types (S7), bombs (S9)."""

import io
import json
import os

from PIL import Image

from apitest_client import bomb_png, get, http, post, png_bytes as _png, upload


def test_uploading_the_same_name_renames_and_identical_content_is_not_duplicated(server, base_dir):
    assert upload(server, _png(color=(1, 2, 3, 255))).json()["name"] == "a.png"
    assert upload(server, _png(color=(1, 2, 3, 255))).json()["name"] == "a.png"
    assert upload(server, _png(color=(9, 9, 9, 255))).json()["name"] == "a (1).png"
    assert upload(server, _png(color=(8, 8, 8, 255)), overwrite="true").json()["name"] == "a.png"
    assert sorted(os.listdir(base_dir / "input")) == ["a (1).png", "a.png"]
    sub = upload(server, _png(), subfolder="pasted", type="temp").json()
    assert sub == {"name": "a.png", "subfolder": "pasted", "type": "temp"}


def test_upload_names_and_folders_that_escape_are_refused(server, base_dir):
    assert upload(server, _png(), subfolder="../../x").status == 400
    assert upload(server, _png(), filename="../evil.png").status == 400
    assert upload(server, _png(), type="bogus").status == 400
    assert not (base_dir.parent / "evil.png").exists() and not (base_dir.parent / "x").exists()


def test_view_refuses_traversal_and_symlink_escapes(server, base_dir):
    (base_dir / "input" / "a..png").write_bytes(_png())
    os.symlink("/etc", base_dir / "input" / "link")
    os.symlink("/etc/passwd", base_dir / "input" / "x.png")
    assert get(server, "/view?filename=../../../etc/passwd&type=output").status == 400
    assert get(server, "/view?filename=passwd&subfolder=../../../../etc&type=input").status == 403
    assert get(server, "/view?filename=passwd&subfolder=link&type=input").status == 403
    assert get(server, "/view?filename=x.png&type=input").status == 403
    assert get(server, "/view?filename=a..png&type=input").status == 200
    assert get(server, "/view?filename=a..png&type=bogus").status == 400
    assert get(server, "/view").status == 404
    assert get(server, "/view?filename=missing.png").status == 404


def test_uploads_that_do_not_decode_as_images_are_refused_and_not_stored(server, base_dir):
    svg = upload(server, b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>", filename="x.svg")
    html = upload(server, b"<script>alert(1)</script>", filename="x.html")
    truncated = upload(server, _png()[:40], filename="cut.png")
    bomb = upload(server, bomb_png(), filename="bomb.png")
    assert [r.status for r in (svg, html, truncated, bomb)] == [400, 400, 400, 400]
    assert html.json() == {"error": "not an image"} and bomb.json() == {"error": "image too large"}
    assert not {"x.svg", "x.html", "cut.png", "bomb.png"} & set(os.listdir(base_dir / "input"))


def test_svg_and_html_files_in_the_input_folder_are_served_as_sandboxed_attachments(server, base_dir):
    (base_dir / "input" / "x.svg").write_bytes(b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>")
    (base_dir / "input" / "x.html").write_bytes(b"<script>alert(1)</script>")
    for name in ("x.svg", "x.html"):
        reply = get(server, f"/view?filename={name}&type=input")
        assert reply.status == 200 and reply.headers["Content-Type"] == "application/octet-stream"
        assert reply.headers["Content-Disposition"] == f'attachment; filename="{name}"'
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" in reply.headers["Content-Security-Policy"]


def test_view_previews_and_channels_reencode_and_refuse_bombs(server, base_dir):
    (base_dir / "input" / "pic.png").write_bytes(_png(color=(10, 20, 30, 128)))
    webp = get(server, "/view?filename=pic.png&type=input&preview=webp;50")
    assert webp.status == 200 and webp.headers["Content-Type"] == "image/webp"
    alpha = get(server, "/view?filename=pic.png&type=input&channel=a")
    assert Image.open(io.BytesIO(alpha.body)).getpixel((0, 0)) == (0, 0, 0, 128)
    rgb = get(server, "/view?filename=pic.png&type=input&channel=rgb")
    assert Image.open(io.BytesIO(rgb.body)).mode == "RGB"
    (base_dir / "input" / "bomb.png").write_bytes(bomb_png())
    assert get(server, "/view?filename=bomb.png&type=input&preview=webp").json() == {"error": "image too large"}
    assert get(server, "/view?filename=bomb.png&type=input").status == 200
    (base_dir / "input" / "junk.png").write_bytes(b"not an image")
    assert get(server, "/view?filename=junk.png&type=input&channel=rgb").json() == {"error": "not an image"}


def test_an_oversized_upload_gets_413_and_leaves_no_file(start_server, base_dir):
    server = start_server(max_upload_size=0.05)
    assert upload(server, b"\0" * 200_000, filename="big.bin").status == 413
    assert not os.listdir(base_dir / "input")
    assert [n for n in os.listdir(base_dir / "temp") if n.startswith(".upload")] == []


def test_mask_upload_replaces_the_alpha_of_the_original(server, base_dir):
    (base_dir / "input" / "photo.png").write_bytes(_png(color=(50, 60, 70, 255)))
    ref = json.dumps({"filename": "photo.png", "subfolder": "", "type": "input"})
    reply = upload(server, _png(color=(0, 0, 0, 40)), filename="photo_mask.png", route="/upload/mask",
                   original_ref=ref)
    assert reply.status == 200 and reply.json()["name"] == "photo_mask.png"
    merged = Image.open(base_dir / "input" / "photo_mask.png")
    assert merged.getpixel((0, 0)) == (50, 60, 70, 40)
    missing = json.dumps({"filename": "nope.png", "type": "input"})
    assert upload(server, _png(), route="/upload/mask", original_ref=missing).status == 404


def test_user_data_files_round_trip_and_stored_html_is_never_rendered(server):
    written = post(server, "/api/userdata/workflows%2Fmy%20flow.json", data=b'{"nodes": []}')
    assert written.status == 200 and written.json() == "workflows/my flow.json"
    listed = get(server, "/api/userdata?dir=workflows&recurse=true&split=false&full_info=true").json()
    assert [f["path"] for f in listed] == ["my flow.json"]
    assert get(server, "/api/userdata/workflows%2Fmy%20flow.json").json() == {"nodes": []}
    assert post(server, "/api/userdata/workflows%2Fmy%20flow.json?overwrite=false", data=b"{}").status == 409
    post(server, "/api/userdata/evil.html", data=b"<script>alert(1)</script>")
    evil = get(server, "/api/userdata/evil.html")
    assert evil.headers["Content-Type"] == "application/octet-stream"
    assert evil.headers["Content-Disposition"].startswith("attachment")
    assert get(server, "/api/userdata/..%2F..%2Fcomfy.settings.json").status == 403
    assert get(server, "/api/userdata?dir=subgraphs").status == 404
    moved = post(server, "/api/userdata/workflows%2Fmy%20flow.json/move/workflows%2Frenamed.json")
    assert moved.json() == "workflows/renamed.json"
    assert http(server, "DELETE", "/api/userdata/workflows%2Frenamed.json").status == 204


def test_user_data_writes_report_full_info_and_refuse_overwriting_on_move(server):
    info = post(server, "/api/userdata/workflows%2Fa.json?full_info=true", data=b"{}").json()
    assert info["path"] == "workflows/a.json" and info["size"] == 2 and isinstance(info["modified"], float)
    post(server, "/api/userdata/workflows%2Fb.json", data=b"{}")
    assert post(server, "/api/userdata/workflows%2Fa.json/move/workflows%2Fb.json?overwrite=false").status == 409
    assert post(server, "/api/userdata/workflows%2Fmissing.json/move/workflows%2Fc.json").status == 404
    split = get(server, "/api/userdata?dir=workflows&split=true").json()
    assert split == [["a.json", "a.json"], ["b.json", "b.json"]]
