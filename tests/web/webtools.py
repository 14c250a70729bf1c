"""Helpers for the web editor's browser tests: the stand-in API server and an editor driver.

Kept out of conftest.py so test modules can import them by a name no other test folder uses.
"""

from __future__ import annotations

import json
import mimetypes
import statistics
import struct
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
FIXTURES = ROOT / "tests" / "fixtures" / "web"
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
ORIGIN = "http://kiln.test"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def fixture_json(name: str):
    return json.loads((FIXTURES / name).read_text())


@dataclass
class FakeServer:
    """In-memory stand-in for the routes the editor calls (api.md), with a scriptable /ws."""

    object_info: dict = field(default_factory=lambda: fixture_json("object_info.json"))
    templates: dict = field(default_factory=lambda: {"default": fixture_json("default_workflow.json")})
    prompts: list = field(default_factory=list)
    uploads: dict = field(default_factory=dict)
    user_files: dict = field(default_factory=dict)
    history: dict = field(default_factory=dict)
    sockets: list = field(default_factory=list)
    extensions: dict = field(default_factory=dict)  # URL path -> JavaScript source
    settings: dict = field(default_factory=dict)
    pending: list = field(default_factory=list)  # queue items [number, prompt_id, prompt, extra_data, outputs]
    calls: list = field(default_factory=list)  # (method, path, body) of mutating calls
    sid: str = "testclient"

    def handle(self, route):
        """Serve web/ statically and answer API routes (with or without the /api prefix)."""
        req = route.request
        url = urlparse(req.url)
        path = unquote(url.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if path.startswith("/api/"):
            path = path[4:]
        elif path.startswith("/templates/"):
            name = path.removeprefix("/templates/")
            if name == "index.json":
                return self.reply(route, list(self.templates))
            wf = self.templates.get(name.removesuffix(".json"))
            return self.reply(route, wf) if wf is not None else route.fulfill(status=404, body="")
        elif path in self.extensions:
            return route.fulfill(status=200, body=self.extensions[path], headers={"Content-Type": "text/javascript"})
        else:
            return self.static(route, path)
        method = req.method
        if method in ("POST", "DELETE") and path != "/upload/image":
            self.calls.append((method, path, req.post_data))
        if path == "/object_info":
            return self.reply(route, self.object_info)
        if path == "/prompt" and method == "POST":
            return self.post_prompt(route, json.loads(req.post_data or "{}"))
        if path == "/queue":
            if method == "GET":
                return self.reply(route, {"queue_running": [], "queue_pending": self.pending})
            deleted = set(json.loads(req.post_data or "{}").get("delete", []))
            self.pending = [p for p in self.pending if p[1] not in deleted]
            return route.fulfill(status=200, body="")
        if path == "/history":
            return self.reply(route, self.history) if method == "GET" else route.fulfill(status=200, body="")
        if path in ("/interrupt", "/free"):
            return route.fulfill(status=200, body="")
        if path == "/settings":
            return self.reply(route, self.settings)
        if path.startswith("/settings/") and method == "POST":
            self.settings[path.removeprefix("/settings/")] = json.loads(req.post_data)
            return route.fulfill(status=200, body="")
        if path == "/extensions":
            return self.reply(route, list(self.extensions))
        if path == "/view":
            data = self.uploads.get(query.get("filename", "")) or (FIXTURES / "workflow.png").read_bytes()
            return route.fulfill(status=200, body=data, headers={"Content-Type": "image/png"})
        if path == "/upload/image":
            return self.upload(route)
        if path == "/userdata" and query.get("dir") == "workflows":
            files = sorted(k.removeprefix("workflows/") for k in self.user_files if k.startswith("workflows/"))
            return self.reply(route, files) if files else route.fulfill(status=404, body="Directory not found")
        if path.startswith("/userdata/"):
            name = path.removeprefix("/userdata/")
            if method == "POST":
                self.user_files[name] = req.post_data
                return self.reply(route, name)
            if name in self.user_files:
                return route.fulfill(status=200, body=self.user_files[name], headers={"Content-Type": "application/json"})
            return route.fulfill(status=404, body="")
        return route.fulfill(status=404, body="")

    def static(self, route, path: str):
        target = (WEB / path.lstrip("/")).resolve()
        if path == "/":
            target = WEB / "index.html"
        if not target.is_file() or WEB not in target.parents:
            return route.fulfill(status=404, body="")
        mime = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if target.suffix == ".js":
            mime = "text/javascript"
        return route.fulfill(status=200, body=target.read_bytes(), headers={"Content-Type": mime})

    @staticmethod
    def reply(route, body, status=200):
        route.fulfill(status=status, body=json.dumps(body), headers={"Content-Type": "application/json"})

    def post_prompt(self, route, body):
        """Queue a prompt; a checkpoint name outside the list fails validation as on the real server."""
        prompt = body.get("prompt", {})
        errors = {}
        for node_id, node in prompt.items():
            if node["class_type"] == "CheckpointLoaderSimple":
                options = self.object_info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
                name = node["inputs"].get("ckpt_name")
                if name not in options:
                    errors[node_id] = {"errors": [{"type": "value_not_in_list", "message": "Value not in list",
                                                   "details": f"ckpt_name: '{name}' not in {options}", "extra_info": {}}],
                                       "dependent_outputs": [k for k, n in prompt.items() if n["class_type"] == "SaveImage"],
                                       "class_type": "CheckpointLoaderSimple"}
        if errors:
            return self.reply(route, {"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                                                "details": "", "extra_info": {}}, "node_errors": errors}, status=400)
        prompt_id = str(uuid.uuid4())
        self.prompts.append({"prompt_id": prompt_id, **body})
        return self.reply(route, {"prompt_id": prompt_id, "number": len(self.prompts), "node_errors": {}})

    def upload(self, route):
        data = route.request.post_data_buffer or b""
        # Pull the file name and bytes out of the multipart body.
        head, _, rest = data.partition(b"\r\n\r\n")
        name = head.split(b'filename="', 1)[1].split(b'"', 1)[0].decode()
        boundary = data.split(b"\r\n", 1)[0]
        self.uploads[name] = rest.split(b"\r\n" + boundary, 1)[0]
        return self.reply(route, {"name": name, "subfolder": "", "type": "input"})

    def on_socket(self, ws):
        self.sockets.append(ws)
        ws.send(json.dumps({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": self.sid}}))

    def send(self, event: str, data: dict):
        for ws in self.sockets:
            ws.send(json.dumps({"type": event, "data": data}))

    def send_preview(self, node_id: str, prompt_id: str, png: bytes):
        meta = json.dumps({"node_id": node_id, "prompt_id": prompt_id, "display_node_id": node_id, "parent_node_id": None,
                           "real_node_id": node_id, "image_type": "image/png"}).encode()
        for ws in self.sockets:
            ws.send(struct.pack(">II", 4, len(meta)) + meta + png)


class Editor:
    """A page running the editor, with helpers that act through the mouse and keyboard."""

    def __init__(self, page, server, console_errors):
        self.page = page
        self.server = server
        self.console_errors = console_errors

    def js(self, expr: str, arg=None):
        return self.page.evaluate(expr, arg)

    def node_ids(self) -> list[int]:
        return self.js("() => [...app.graph.nodes.keys()]")

    def nodes_of(self, type_: str) -> list[int]:
        return self.js("(t) => [...app.graph.nodes.values()].filter(n => n.type === t).map(n => n.id)", type_)

    def slot(self, node_id: int, side: str, index: int) -> tuple[float, float]:
        x, y = self.js("([id, s, i]) => app.view.slotClientPos(id, s, i)", [node_id, side, index])
        return x, y

    def widget_rect(self, node_id: int, name: str) -> dict:
        return self.js("([id, n]) => app.view.widgetClientRect(id, n)", [node_id, name])

    def widget_value(self, node_id: int, name: str):
        return self.js("([id, n]) => app.graph.nodes.get(id).widget(n).value", [node_id, name])

    def title_point(self, node_id: int) -> tuple[float, float]:
        r = self.js("(id) => app.view.nodeClientRect(id)", node_id)
        return r["x"] + r["width"] / 2, r["y"] + 12

    def drag(self, a, b, steps: int = 8):
        m = self.page.mouse
        m.move(*a)
        m.down()
        m.move(*b, steps=steps)
        m.up()

    def add_by_search(self, query: str, at: tuple[float, float]) -> int:
        """Double-click empty canvas, type, press Enter; returns the new node's id."""
        before = set(self.node_ids())
        self.page.mouse.dblclick(*at)
        box = self.page.locator("#node-search input")
        box.fill(query)
        box.press("Enter")
        (new,) = set(self.node_ids()) - before
        return new

    def set_widget_text(self, node_id: int, name: str, text: str):
        """Click the middle of a widget and type into the inline editor."""
        r = self.widget_rect(node_id, name)
        self.page.mouse.click(r["x"] + r["width"] / 2, r["y"] + r["height"] / 2)
        field = self.page.locator(".widget-editor")
        field.fill(text)
        field.press("Control+Enter" if self.js("() => document.querySelector('.widget-editor').tagName") == "TEXTAREA" else "Enter")

    def drop_file(self, data: bytes, name: str, mime: str, at: tuple[float, float] = (600, 400)):
        """Drop a file on the page as the browser would from the desktop."""
        self.page.evaluate(
            """([bytes, name, mime, x, y]) => {
                const dt = new DataTransfer();
                dt.items.add(new File([new Uint8Array(bytes)], name, {type: mime}));
                const target = document.elementFromPoint(x, y);
                target.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, clientX: x, clientY: y, bubbles: true, cancelable: true}));
            }""",
            [list(data), name, mime, at[0], at[1]],
        )
        # Opening reads the file asynchronously; it ends with a toast naming the file.
        self.page.wait_for_function("(n) => [...document.querySelectorAll('.toast')].some(t => t.textContent.includes(n))", arg=name)

    def screenshot(self, name: str):
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / name))

    def pan_frame_times(self, moves: int = 90) -> dict:
        """Pan with the middle mouse button over `moves` pointer moves; median draw time and rAF interval in ms."""
        self.js("() => { app.view.drawTimes.length = 0; window.__raf = []; window.__stop = false; let last = performance.now();"
                " const tick = (t) => { window.__raf.push(t - last); last = t; if (!window.__stop) requestAnimationFrame(tick); };"
                " requestAnimationFrame(tick); }")
        m = self.page.mouse
        m.move(700, 450)
        m.down(button="middle")
        for i in range(moves):
            m.move(580 + (i % 30) * 8, 400 + (i % 20) * 5)
        m.up(button="middle")
        self.js("() => { window.__stop = true; }")
        draws = self.js("() => app.view.drawTimes.slice()")
        raf = self.js("() => window.__raf.slice(1)")
        return {"draws": len(draws), "median_draw_ms": statistics.median(draws),
                "median_frame_interval_ms": statistics.median(raf) if raf else None}


def build_txt2img(editor, positive="a red circle on a blue square", negative="blurry"):
    """Build the default txt2img graph with search-add, drag-connect and widget edits."""
    editor.page.click("#clear-button")
    assert editor.node_ids() == []
    editor.js("() => { app.view.ds = {scale: 0.8, offset: [0, 0]}; app.view.dirty(); }")
    ck = editor.add_by_search("load checkpoint", (60, 300))
    pos = editor.add_by_search("clip text encode", (380, 120))
    neg = editor.add_by_search("clip text encode", (380, 420))
    lat = editor.add_by_search("empty latent", (380, 700))
    ks = editor.add_by_search("ksampler", (700, 200))
    dec = editor.add_by_search("vae decode", (1000, 150))
    save = editor.add_by_search("save image", (1000, 450))
    links = [(ck, 0, ks, 0), (ck, 1, pos, 0), (ck, 1, neg, 0), (pos, 0, ks, 1), (neg, 0, ks, 2), (lat, 0, ks, 3),
             (ks, 0, dec, 0), (ck, 2, dec, 1), (dec, 0, save, 0)]
    for o, os_, t, ts in links:
        editor.drag(editor.slot(o, "out", os_), editor.slot(t, "in", ts))
    editor.set_widget_text(pos, "text", positive)
    editor.set_widget_text(neg, "text", negative)
    r = editor.widget_rect(ks, "steps")
    for _ in range(2):  # the left arrow steps down
        editor.page.mouse.click(r["x"] + 6, r["y"] + r["height"] / 2)
    r = editor.widget_rect(ks, "seed:control")
    editor.page.mouse.click(r["x"] + r["width"] / 2, r["y"] + r["height"] / 2)
    editor.page.get_by_role("menuitem", name="fixed", exact=True).click()
    editor.set_widget_text(ks, "seed", "42")
    return dict(ck=ck, pos=pos, neg=neg, lat=lat, ks=ks, dec=dec, save=save)
