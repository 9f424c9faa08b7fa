"""Pytest fixtures for Eclipse Leshan (registered by ``pytest_plugins`` in conftest.py).

``leshan`` is one demo server per test session (per xdist worker), started on first use with
``lwm2m-objects/`` loaded and every listener on 127.0.0.1; it offers ``.coap_url``, ``.web_url``,
``.api(path)``, ``.events(endpoint)`` (server-sent events from ``/api/event``) and ``.stop()``.
``leshan_jar`` is the cached jar, for tests that need a server of their own (other models).

The fixtures never download: tests must not need the internet. ``make test`` fetches the jar first
(``make leshan-jar``). Without the jar or a Java 17 runtime the tests fail with the command that
fixes it; they are never skipped, so a missing prerequisite cannot pass silently.

The implementation lives in ``scripts/leshan.py`` (standard library only, also a CLI for humans);
it is loaded here by path because ``scripts/`` is not a package.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "lwm2m-objects"


def _load_script() -> ModuleType:
    name = "gridkey_scripts_leshan"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "leshan.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


leshan_script = _load_script()
LeshanServer = leshan_script.LeshanServer
LeshanUnavailable = leshan_script.LeshanUnavailable


def _unavailable(exc: Exception) -> NoReturn:
    pytest.fail(f"Leshan is unavailable: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def leshan_jar() -> Path:
    """The verified demo server jar from the cache (or ``$GRIDKEY_LESHAN_JAR``), with Java 17 checked."""
    try:
        jar = leshan_script.cached_jar()
        leshan_script.find_java()
    except LeshanUnavailable as exc:
        _unavailable(exc)
    return jar


@pytest.fixture(scope="session")
def leshan(leshan_jar: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LeshanServer]:
    """A running Leshan demo server with GridKey's DDF files, stopped at the end of the session.

    Its working directory (``leshan.log``, Californium's properties) is a pytest temporary directory,
    so the log of a failed run stays available for inspection.
    """
    server = LeshanServer(leshan_jar, models=MODELS_DIR, workdir=tmp_path_factory.mktemp("leshan"))
    try:
        server.start()
    except LeshanUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()
