"""The waiting helper every cross-component test leans on: it must tell "not yet" from "wrong"."""

from __future__ import annotations

import time

import httpx
import pytest

from helpers import NotYet, free_port, wait_for


def test_wait_for_retries_not_yet_until_it_holds():
    calls = iter([NotYet("starting"), None, 0, "ready"])

    def check():
        value = next(calls)
        if isinstance(value, Exception):
            raise value
        return value

    assert wait_for("ready", check, timeout=5, interval=0) == "ready"


def test_wait_for_retries_a_component_that_is_not_listening_yet():
    url = f"http://127.0.0.1:{free_port()}/"  # nothing listens: ConnectError, as while a sidecar restarts
    with pytest.raises(AssertionError, match="ConnectError"):
        wait_for("a listener", lambda: httpx.get(url, timeout=1), timeout=0.3, interval=0.05)


@pytest.mark.parametrize("exc", [AssertionError("GET /v1/groups/g -> 500"), KeyError("m-1"), TypeError("bad")])
def test_wait_for_fails_at_once_on_a_verdict(exc):
    """A 5xx, a disagreement or a broken check is an answer, not a reason to wait out the timeout."""
    calls = []

    def check():
        calls.append(1)
        raise exc

    t0 = time.monotonic()
    with pytest.raises(type(exc)) as info:
        wait_for("something", check, timeout=30, interval=0.01)
    assert info.value is exc and len(calls) == 1
    assert time.monotonic() - t0 < 1
