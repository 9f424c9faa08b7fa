"""A headless Chromium for the browser tests (registered by ``pytest_plugins`` in conftest.py).

Debian's ``chromium`` and ``chromium-driver`` (``scripts/install-system-deps.sh``), driven through an
explicit ``Service`` path so Selenium Manager never tries to download anything. Without them the
tests fail with the command that fixes it (they are never skipped).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest

CHROMIUM = os.environ.get("GRIDKEY_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("GRIDKEY_CHROMEDRIVER", "/usr/bin/chromedriver")
# What the machine probe found necessary: root needs --no-sandbox; the background-networking flags keep
# Chromium from calling Google's services, which this machine's closed network refuses.
CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
except ImportError as exc:  # the dev extras are not installed
    SELENIUM_ERROR: str | None = f"selenium is not installed ({exc}): pip install -e 'python[dev]'"
else:
    SELENIUM_ERROR = None


def _unavailable(reason: str) -> NoReturn:
    pytest.fail(f"a headless Chromium is required but {reason}", pytrace=False)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Debian's headless Chromium under chromedriver, with a fresh profile; its logs stay in the tmp dir."""
    if SELENIUM_ERROR:
        _unavailable(SELENIUM_ERROR)
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        _unavailable(f"{' and '.join(missing)} not found: run scripts/install-system-deps.sh")
    work = tmp_path_factory.mktemp("chromium")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (*CHROMIUM_ARGS, f"--user-data-dir={work / 'profile'}"):
        options.add_argument(arg)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(work / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()
