"""A live Kiln server on a free port (its own thread and loop) with the test nodes, for real clients."""

import asyncio
import os
import threading

import pytest
from aiohttp import web

from engine.cache import make_cache
from engine.config import RuntimeConfig
from engine.executor import Executor
from engine.paths import Paths
from engine.registry import Registry
from engine.server import create_app
from apitest_nodes import SPECS


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


@pytest.fixture
def base_dir(tmp_path):
    for area in ("input", "output", "temp", "user"):
        os.makedirs(tmp_path / area, exist_ok=True)
    return tmp_path


@pytest.fixture
def start_server(base_dir):
    """Factory: start a server with config overrides (optional policy, extra node specs, a
    `prepare(registry)` callback run before the app is built); stopped after the test."""
    servers = []

    def start(**overrides) -> LiveServer:
        policy = overrides.pop("policy", None)
        extra_specs = overrides.pop("specs", ())
        prepare = overrides.pop("prepare", None)
        config = RuntimeConfig(base_directory=str(base_dir), **overrides)
        paths = Paths.from_config(config)
        registry = make_registry(paths, extra_specs)
        if prepare is not None:
            prepare(registry)
        executor = Executor(registry, cache=make_cache(config.cache_policy), paths=paths, config=config)
        server = LiveServer(create_app(config, registry, executor, paths=paths, policy=policy))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_server):
    return start_server()
