"""Fixtures for the engine tests: a registry of the torch-free test nodes and a prompt runner."""
from __future__ import annotations

import os
import sys

import pytest

from engine.paths import Paths
from engine.registry import Registry
from enginetest_nodes import ALL, CALLS, Runner


@pytest.fixture
def registry(tmp_path) -> Registry:
    reg = Registry(Paths(str(tmp_path)))
    for fn in ALL:
        reg.add(fn.spec, core=True)
    return reg


@pytest.fixture
def calls():
    CALLS.clear()
    return CALLS


@pytest.fixture
def runner(registry):
    return Runner(registry)


def pytest_sessionfinish(session, exitstatus):
    """Under KILN_ASSERT_NO_TORCH (the layering test's subprocess run), fail if anything imported torch."""
    if os.environ.get("KILN_ASSERT_NO_TORCH") and "torch" in sys.modules:
        session.config.get_terminal_writer().line("tests/engine imported torch: the engine must stay torch-free",
                                                  red=True)
        session.exitstatus = 1
