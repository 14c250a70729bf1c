"""Upload -> LoadImage -> SaveImage -> /view through a live server with the real image nodes."""

import io

from PIL import Image

from apitest_client import get, png_bytes as _png, post, queue_prompt, upload, wait_history


def test_upload_then_load_image_then_view_round_trips_the_pixels(start_server):
    from nodes.image import load_image, save_image, image_invert

    server = start_server(specs=[load_image.spec, save_image.spec, image_invert.spec])
    reply = upload(server, _png(color=(200, 30, 30, 255)), filename="red.png")
    assert reply.status == 200 and reply.json() == {"name": "red.png", "subfolder": "", "type": "input"}
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "red.png"}},
              "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
              "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "trip"}}}
    entry = wait_history(server, queue_prompt(server, prompt), timeout=60)
    assert entry["status"]["status_str"] == "success", entry["status"]
    saved = entry["outputs"]["3"]["images"][0]
    view = get(server, f"/view?filename={saved['filename']}&subfolder={saved['subfolder']}&type={saved['type']}")
    assert view.status == 200 and view.headers["Content-Type"] == "image/png"
    assert view.headers["Content-Disposition"] == f'inline; filename="{saved["filename"]}"'
    pixel = Image.open(io.BytesIO(view.body)).convert("RGB").getpixel((0, 0))
    assert all(abs(a - b) <= 1 for a, b in zip(pixel, (55, 225, 225)))   # inverted red, 8-bit rounding


def test_load_image_refuses_a_path_outside_the_input_folder_at_submit(start_server):
    from nodes.image import load_image, save_image

    server = start_server(specs=[load_image.spec, save_image.spec])
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "../../../../etc/passwd"}},
              "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
    reply = post(server, "/prompt", {"prompt": prompt})
    assert reply.status == 400
    error = reply.json()["node_errors"]["1"]["errors"][0]
    assert (error["type"], error["details"]) == ("custom_validation_failed",
                                                 "image - Invalid image file: ../../../../etc/passwd")
