"""The strict roster profile end to end: an operator signs the roster (`gridkey roster sign`), the
REST API carries it (PUT /v1/groups/{g}/roster), the gateway puts it in every Start, and meters
provisioned with the operator's key accept only rosters it allows. The deviations a rogue gateway
could try are played against real members in python/tests/test_rogue.py."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

from cryptography import x509

from gridkey.crypto.identity import cert_to_pem
from gridkey.protocol.policy import MemberPolicy
from helpers import FleetRunner, wait_for

METERS = ["s-1", "s-2", "s-3"]


def sign(tmp_path, op_dir, version: int, certs: list, group: str = "strict") -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "gridkey.cli", "roster", "sign", "--key", str(op_dir / "key.pem"), "--group", group,
         "--version", str(version), *(a for c in certs for a in ("--cert", str(c)))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def hold_current_key(sidecar, fleet: FleetRunner, members: list[str], after: int = 0) -> None:
    """The members all hold the gateway's current key, of an epoch above ``after``."""

    def check() -> bool:
        g = sidecar.group("strict")
        return g["epoch"] > after and all(
            v == (g["epoch"], g["key_id"]) for v in fleet.key_ids("strict", members).values()
        )

    wait_for(f"{members} on the current key", check, 30)


def test_meters_follow_the_operators_signed_roster(sidecar, tmp_path):
    op_dir = tmp_path / "operator"
    op_key, _ = sidecar.data.issue_identity("head-end", "operator", "GK1", op_dir)
    fleet = FleetRunner(sidecar, METERS, policy=MemberPolicy(roster_authorities=(op_key.public_key,))).start()
    try:
        certs = {}
        for a in fleet.fleet.agents:
            certs[a.meter_id] = tmp_path / f"{a.meter_id}.pem"
            certs[a.meter_id].write_bytes(cert_to_pem(x509.load_der_x509_certificate(a.cert_der)))
        # a group the gateway alone decided: strict meters take no part
        sidecar.api("POST", "/v1/groups", json={"group_id": "strict", "members": METERS})

        def refused() -> set[str]:
            return {m for m, k, i in fleet.events if k == "start_refused" and i["reason"] == "roster_unauthorized"}

        wait_for("every meter refuses a roster no operator signed", lambda: refused() == set(METERS), 20)

        # the operator signs s-1 and s-2; the gateway adopts it and rekeys
        body = sign(tmp_path, op_dir, 1, [certs["s-1"], certs["s-2"]])
        g = sidecar.api("PUT", "/v1/groups/strict/roster", json=body)
        assert g["roster_version"] == 1
        assert {m["meter_id"] for m in g["members"] if m["status"] != "removed"} == {"s-1", "s-2"}
        hold_current_key(sidecar, fleet, ["s-1", "s-2"])
        assert sidecar.group("strict")["epoch_members"] == ["s-1", "s-2"]

        # the same version again, and a statement for another group, are refused with a reason
        def put(body: dict):
            return sidecar.http.request("PUT", "/v1/groups/strict/roster", json=body)

        again = put(body)
        assert again.status_code == 409 and "not newer" in again.json()["detail"]
        wrong = put(sign(tmp_path, op_dir, 2, [certs["s-1"]], group="elsewhere"))
        assert wrong.status_code == 400 and "elsewhere" in wrong.json()["detail"]
        junk = put({"statement": base64.b64encode(b"junk").decode()})
        assert junk.status_code == 400 and junk.headers["content-type"].startswith("application/problem+json")

        # v2 takes s-3 back in
        sidecar.api("PUT", "/v1/groups/strict/roster", json=sign(tmp_path, op_dir, 2, list(certs.values())))
        v1_epoch = sidecar.group("strict")["epoch"]
        hold_current_key(sidecar, fleet, METERS, after=v1_epoch)
        assert sidecar.group("strict")["epoch_members"] == METERS
    finally:
        fleet.stop()
