"""The Leshan web UI shows GridKey's group-key state: a headless Chromium, driven by Selenium, opens
Leshan's client list, clicks a meter, opens the *GridKey Group Membership* object (33001), presses the
instance's Read button and finds the meter's *Key Version* equal to the gateway's current epoch (and
Group ID and Key ID equal to the gateway's). This proves what an operator sees end to end: our DDF
file is loaded and rendered by name, the UI's Read (TLV, Leshan's default) reaches the GridKey LwM2M
client, and the value it shows is the live one.

The screenshot of the final page is kept as a test artifact in ``artifacts/leshan-ui.png`` (written
even when the test fails, showing where it got stuck) and its path is recorded as the test property
``screenshot`` (in JUnit XML) and printed (``pytest -rP``).

Browser: Debian's ``chromium`` and ``chromium-driver`` (``scripts/install-system-deps.sh``), driven
through an explicit ``Service`` path so Selenium Manager never tries to download anything. Without
them the test fails with the command that fixes it (it is never skipped).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import FleetRunner, SidecarProc, wait_for

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "artifacts" / "leshan-ui.png"
GROUP = "feeder-ui"
METERS = ["ui-1", "ui-2", "ui-3"]  # not lw-*: test_lwm2m's endpoints may share this worker's Leshan
METER = METERS[0]
WAIT_S = 30.0

try:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # the browser fixture fails with the command that fixes it
    pass


@pytest.fixture(scope="module")
def ui_stack(leshan: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, SidecarProc]]:
    """Leshan + a sidecar registering its meters there, the group at epoch 2 (one manual rekey, so the
    key version is not the ``1`` that also appears in every resource path), ``METER`` registered with
    its 33001 instance."""
    work: Path = tmp_path_factory.mktemp("leshan-ui")
    sc = SidecarProc(work / "sc", controller=True, extra_args=("--lwm2m-server", leshan.coap_url)).start()
    fleet = FleetRunner(sc, METERS).start()
    try:
        sc.api("POST", "/v1/groups", json={"group_id": GROUP, "members": [*METERS, "controller"]})
        fleet.wait_epoch(GROUP, 1, METERS)
        sc.api("POST", f"/v1/groups/{GROUP}/rekey")
        fleet.wait_epoch(GROUP, 2, METERS)
        wait_for(
            f"{METER} registered with a 33001 instance",
            lambda: any(
                link["url"].startswith("/33001/")
                for c in leshan.api("clients")
                if c["endpoint"] == METER
                for link in c["objectLinks"]
            ),
            WAIT_S,
        )
        yield leshan, sc
    finally:
        try:
            fleet.stop()
        finally:
            sc.stop()


def instance_of(leshan: Any, endpoint: str, group: str) -> int:
    """The 33001 instance id that holds ``group`` on ``endpoint`` (instance ids are the client's own)."""
    r = leshan.api(f"clients/{endpoint}/33001?format=TLV&timeout=10")
    assert r["success"], r
    for inst in r["content"]["instances"]:
        if {res["id"]: res["value"] for res in inst["resources"]}[0] == group:
            return inst["id"]
    raise AssertionError(f"{endpoint} has no 33001 instance for {group}: {r}")


def resource_value(driver: WebDriver, path: str) -> WebElement:
    """The value cell of the resource row whose path column reads ``path`` (e.g. ``/33001/0/1``)."""
    return driver.find_element(
        By.XPATH,
        "//button[contains(@class, 'v-expansion-panel-header')]"
        f"[.//div[normalize-space() = '{path}']]//div[contains(@class, 'text-truncate')]",
    )


def test_leshan_ui_shows_the_gridkey_key_version(
    browser: WebDriver, ui_stack: tuple[Any, SidecarProc], record_property: Any
) -> None:
    """Client list -> meter -> GridKey Group Membership -> Read: the page shows the gateway's epoch.

    ``browser`` comes before ``ui_stack`` so that a missing Chromium fails before the stack starts."""
    leshan, sc = ui_stack
    iid = instance_of(leshan, METER, GROUP)
    wait = WebDriverWait(browser, WAIT_S)
    steps: list[tuple[str, float]] = []
    t0 = time.monotonic()

    def step(name: str) -> None:
        steps.append((name, time.monotonic() - t0))

    try:
        # 1. the client list (Leshan's start page, route #/clients): a table row per endpoint
        browser.get(leshan.web_url)
        row = wait.until(
            ec.element_to_be_clickable((By.XPATH, f"//tbody//tr/td[normalize-space() = '{METER}']")),
            f"{METER} in Leshan's client list",
        )
        step("client list")
        # 2. clicking the row opens the client page (#/clients/<endpoint>/3, the Device object)
        row.click()
        gridkey = wait.until(
            ec.element_to_be_clickable(
                (By.XPATH, "//a[contains(@class, 'v-list-item')][.//*[normalize-space() = 'GridKey Group Membership']]")
            ),
            "'GridKey Group Membership' in the client's object list",
        )
        assert gridkey.get_attribute("href").endswith(f"#/clients/{METER}/33001")
        step("client page")
        # 3. the object page (#/clients/<endpoint>/33001): one block per instance, one row per resource
        gridkey.click()
        read = wait.until(
            ec.element_to_be_clickable((By.CSS_SELECTOR, f"button[title='Read /33001/{iid}']")),
            f"the Read button of instance /33001/{iid}",
        )
        assert resource_value(browser, f"/33001/{iid}/1").text == "", "a value was shown before any Read"
        step("object page")
        # 4. Read the instance: one TLV read of all its resources, their values fill the rows
        read.click()
        g = sc.group(GROUP)
        key_version = f"/33001/{iid}/1"
        try:
            wait.until(lambda d: resource_value(d, key_version).text == str(g["epoch"]))
        except TimeoutException:
            shown = resource_value(browser, key_version).text
            raise AssertionError(f"Key Version shows {shown!r}, the gateway's epoch is {g['epoch']}") from None
        step("key version shown")
        assert resource_value(browser, key_version).is_displayed()
        assert resource_value(browser, f"/33001/{iid}/0").text == GROUP
        assert resource_value(browser, f"/33001/{iid}/2").text == g["key_id"]
        assert resource_value(browser, f"/33001/{iid}/3").text == "established"
        assert browser.current_url.endswith(f"#/clients/{METER}/33001")
        body = browser.find_element(By.TAG_NAME, "body").text
        assert "GridKey Group Membership" in body and "Key Version" in body
    finally:
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        saved = browser.save_screenshot(str(SCREENSHOT))  # no assert here: it would hide the real failure
        record_property("screenshot", str(SCREENSHOT))
        print(f"\nscreenshot: {SCREENSHOT}" + ("" if saved else " (could not be written)"))
        print("  ".join(f"{name} {t:.2f} s" for name, t in steps))
