"""A live Kiln server on a free port (its own thread and loop) with the test nodes, for real clients."""

import asyncio
import threading

from aiohttp import web

from apitest_nodes import SPECS
from engine.paths import Paths
from engine.registry import Registry


class LiveServer:
    """Runs an aiohttp app on 127.0.0.1:<free port> in a background thread."""

    def __init__(self, app: web.Application):
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app, access_log=None)
        ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if not self.thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def make_registry(paths: Paths, extra_specs=()) -> Registry:
    registry = Registry(paths)
    for spec in [*SPECS, *extra_specs]:
        registry.add(spec, core=True)
    return registry
