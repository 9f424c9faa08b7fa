"""Fixtures for cross-component tests: real processes, real sockets on 127.0.0.1."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import SidecarProc

pytest_plugins = ["pg_fixtures", "leshan_fixtures", "nodered_fixtures", "browser_fixtures"]


@pytest.fixture
def sidecar(tmp_path):
    """A running `gridkey serve` (SQLite, local CA, controller) on free ports."""
    sc = SidecarProc(tmp_path / "sc", controller=True).start()
    yield sc
    sc.stop()
