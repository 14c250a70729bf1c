"""Shared fixtures for node tests: a real Paths under tmp_path and a minimal NodeContext."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

from engine.config import RuntimeConfig
from engine.paths import Paths


@dataclass
class FakeContext:
    """A NodeContext for calling node functions directly."""

    paths: Paths
    config: RuntimeConfig = field(default_factory=RuntimeConfig)
    node_id: str = "1"
    prompt_id: str = "p1"
    warnings: list = field(default_factory=list)
    progress_calls: list = field(default_factory=list)

    def progress(self, value, total, preview=None):
        self.progress_calls.append((value, total))

    def check_interrupt(self):
        pass

    def warn(self, text):
        self.warnings.append(text)


@pytest.fixture
def paths(tmp_path) -> Paths:
    p = Paths(str(tmp_path))
    for d in (p.input_dir, p.output_dir, p.temp_dir):
        os.makedirs(d, exist_ok=True)
    return p


@pytest.fixture
def ctx(paths) -> FakeContext:
    return FakeContext(paths=paths)
