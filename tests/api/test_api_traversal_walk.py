"""Every route registered on the app, every path parameter and path-like query value, one traversal set.

The secret file lies next to the base directory; symlinks to it wait inside every root a request can
name. No reply may contain it, no request may answer 5xx, and nothing outside the roots may change.
"""

import http.client
import json
import os
import re
from urllib.parse import quote

import pytest

SECRET = "kiln-traversal-secret-7f3a"
QUERY_NAMES = ("filename", "subfolder", "dir", "path", "file", "type")


def _payloads(secret_path: str) -> list[str]:
    """Raw (already URL-encoded where needed) values that try to reach the secret."""
    name = os.path.basename(secret_path)
    found = []
    for depth in (1, 2, 3, 6):
        up = "../" * depth + name
        found += [quote(up, safe=""), quote(up, safe="/"), quote(quote(up, safe=""), safe=""),
                  quote(up.replace("/", "\\"), safe="")]
    found += [quote(secret_path, safe=""), quote(secret_path, safe="/"), quote("/etc/passwd", safe=""),
              "a%00.png", quote("link-secret.png"), quote("link-secret.json"), quote("link-dir/" + name),
              "C:%5Cwindows%5Cwin.ini"]
    return found


@pytest.fixture
def walk_server(start_server, base_dir, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    secret = outside / "secret.txt"
    secret.write_text(SECRET)
    web_root = base_dir / "webroot"
    pack_web = base_dir / "packweb"
    roots = [base_dir / "input", base_dir / "output", base_dir / "temp", base_dir / "user" / "default",
             web_root, web_root / "extensions" / "kilnpack", pack_web, base_dir / "models" / "checkpoints"]
    for root in roots:
        root.mkdir(parents=True, exist_ok=True)
        for link in ("link-secret.png", "link-secret.json", "link-secret.safetensors"):
            os.symlink(secret, root / link)
        os.symlink(outside, root / "link-dir")
    (web_root / "index.html").write_text("<!doctype html><title>kiln</title>")

    def prepare(registry):
        registry.web_directories["evilpack"] = str(pack_web)

    server = start_server(front_end_root=str(web_root), prepare=prepare)
    server.secret, server.outside = secret, outside
    return server


def _routes(app) -> list[tuple[str, str]]:
    """(method, canonical path) of every registered route, HEAD and OPTIONS aside."""
    found = set()
    for resource in app.router.resources():
        for route in resource:
            if route.method not in ("HEAD", "OPTIONS") and resource.canonical:
                found.add((route.method if route.method != "*" else "GET", resource.canonical))
    return sorted(found)


def _fill(canonical: str, value: str, target: str | None) -> str:
    """The route's path with `value` in parameter `target` and a harmless name in the others."""
    def sub(match):
        return value if match.group(1) == target else "x"
    return re.sub(r"\{([^}:]+)(?::[^}]*)?\}", sub, canonical)


def _send(port: int, method: str, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        body = json.dumps({}).encode() if method in ("POST", "PUT", "PATCH") else None
        connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_no_route_reaches_a_file_outside_its_root_by_any_traversal(walk_server):
    app, port = walk_server.app, walk_server.port
    payloads = _payloads(str(walk_server.secret))
    before = sorted(os.listdir(walk_server.outside))
    requests = []
    for method, canonical in _routes(app):
        if canonical in ("/ws", "/api/ws"):
            continue
        params = re.findall(r"\{([^}:]+)", canonical)
        for value in payloads:
            for target in params:
                requests.append((method, _fill(canonical, value, target)))
            if method == "GET":
                base = _fill(canonical, "x", None)
                requests += [(method, f"{base}?{name}={value}") for name in QUERY_NAMES]
                requests.append((method, f"{base}?filename={value}&type=input"))
    assert len(requests) > 1000
    for method, path in requests:
        status, body = _send(port, method, path)
        assert status < 500, (method, path, status, body[:200])
        assert SECRET.encode() not in body and b"root:x:0:0" not in body, (method, path)
    assert walk_server.secret.read_text() == SECRET
    assert sorted(os.listdir(walk_server.outside)) == before
