"""Browser fixtures for the web editor: Debian's Chromium driven by Playwright.

Most tests serve `web/` and a small in-memory stand-in for the Kiln API through Playwright
routing (`webtools.FakeServer`), so they run without a model; `test_e2e.py` uses the real server.
"""

from __future__ import annotations

import pytest

from webtools import CHROMIUM, CHROMIUM_ARGS, ORIGIN, Editor, FakeServer


def pytest_configure(config):
    config.addinivalue_line("markers", "server_setup(fn): call fn(FakeServer) before the editor page loads")


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the whole session (starting it is the slow part)."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def editor(browser, request):
    """The editor at a fresh origin with the fake server and an empty localStorage.

    A test marked `@pytest.mark.server_setup.with_args(fn)` gets `fn(server)` called before the page loads.
    """
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(5000)
    server = FakeServer()
    marker = request.node.get_closest_marker("server_setup")
    if marker:
        marker.args[0](server)
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("response", lambda r: errors.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
    page.route(f"{ORIGIN}/**", server.handle)
    page.route_web_socket("**/ws*", server.on_socket)
    page.goto(f"{ORIGIN}/")
    page.wait_for_selector("body[data-ready=true]", timeout=15000)
    page.wait_for_function("() => app.api.connected")
    yield Editor(page, server, errors)
    context.close()
