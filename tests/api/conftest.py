"""Fixtures: a fresh base directory and a factory for live servers (apitest_server.LiveServer)."""

import os

import pytest

from apitest_server import LiveServer, make_registry
from engine.cache import make_cache
from engine.config import RuntimeConfig
from engine.executor import Executor
from engine.paths import Paths
from engine.server import create_app


@pytest.fixture
def base_dir(tmp_path):
    for area in ("input", "output", "temp", "user"):
        os.makedirs(tmp_path / area, exist_ok=True)
    return tmp_path


@pytest.fixture
def start_server(base_dir):
    """Factory: start a server with config overrides (optional policy, extra node specs, a
    `prepare(registry)` callback run before the app is built, a `store`); stopped after the test."""
    servers = []

    def start(**overrides) -> LiveServer:
        policy = overrides.pop("policy", None)
        extra_specs = overrides.pop("specs", ())
        prepare = overrides.pop("prepare", None)
        store = overrides.pop("store", None)
        config = RuntimeConfig(base_directory=str(base_dir), **overrides)
        paths = Paths.from_config(config)
        registry = make_registry(paths, extra_specs)
        if prepare is not None:
            prepare(registry)
        executor = Executor(registry, cache=make_cache(config.cache_policy), paths=paths, config=config)
        server = LiveServer(create_app(config, registry, executor, paths=paths, policy=policy, store=store))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_server):
    return start_server()
