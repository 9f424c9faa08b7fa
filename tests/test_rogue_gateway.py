"""A gateway host taken over, end to end: real meter agents over CoAP, a real `gridkey serve` whose
store the attacker edits between restarts to make the gateway's own identity a group member. The
members judge every Start themselves (docs/protocol.md §4.4): they refuse it with the precise
reason, report it (signed), and keep the key they hold. A revoked meter put back by a gateway that
withholds the CRL is tests/test_external_ca.py; every deviation against the protocol classes, with
the rogue's key derivations, is python/tests/test_rogue.py.
"""

from __future__ import annotations

import sqlite3

from gridkey.crypto.identity import load_certificate
from gridkey.crypto.signatures import verify_key_from_cryptography
from helpers import FleetRunner, SidecarProc, wait_for

METERS = ["rg-1", "rg-2", "rg-3"]
GROUP = "rogue"


def edit_store(sc: SidecarProc, *statements: tuple[str, tuple]) -> None:
    """What whoever holds the gateway host can do: change its database while it is down."""
    sc.stop()
    db = sqlite3.connect(sc.data.path / "gridkey.db")
    try:
        with db:
            for sql, args in statements:
                db.execute(sql, args)
    finally:
        db.close()
    sc.start()


def test_members_refuse_what_a_taken_over_gateway_puts_in_the_roster(tmp_path):
    sc = SidecarProc(tmp_path / "sc").start()
    fleet = FleetRunner(sc, METERS).start()
    try:
        sc.api("POST", "/v1/groups", json={"group_id": GROUP, "members": METERS})
        fleet.wait_epoch(GROUP, 1, METERS)
        sc.api("POST", "/v1/meters/rg-3/revoke", json={"reason": "keyCompromise"})  # a smaller group
        honest = ["rg-1", "rg-2"]
        k2 = fleet.wait_epoch(GROUP, 2, honest)

        def refused(reason: str) -> dict[str, str]:
            return {m: i["detail"] for m, k, i in fleet.events if k == "start_refused" and i["reason"] == reason}

        def still_on_k2() -> None:
            assert fleet.key_ids(GROUP, honest) == {m: (2, k2) for m in honest}

        # 1. the gateway makes itself a member: its own certificate (role gateway) in the roster
        trust = sc.data.trust()
        gw_id, gw_pem = trust.coordinator.gateway_id, trust.coordinator.cert_pem.decode()
        gw_cert = load_certificate(gw_pem.encode())
        kid = verify_key_from_cryptography(gw_cert.public_key()).kid
        edit_store(
            sc,
            (
                "INSERT INTO meters (meter_id, role, kid, cert_pem, fingerprint, serial, not_after, status, "
                "enrolled_at) SELECT ?, 'gateway', ?, ?, 'rogue', ?, not_after, 'active', enrolled_at FROM meters "
                "WHERE meter_id = 'rg-1'",
                (gw_id, kid, gw_pem, f"{gw_cert.serial_number:x}"),
            ),
            (
                "INSERT INTO memberships (group_id, meter_id, status, added_at) "
                "SELECT group_id, ?, 'active', added_at FROM memberships WHERE meter_id = 'rg-1'",
                (gw_id,),
            ),
        )
        sc.api("POST", f"/v1/groups/{GROUP}/rekey")
        wait_for("rg-1 and rg-2 refuse the gateway as a member", lambda: set(honest) <= set(refused("wrong_role")), 30)
        assert all(gw_id in d for m, d in refused("wrong_role").items() if m in honest), refused("wrong_role")
        assert sc.group(GROUP)["session"]["members"] == sorted([*honest, gw_id])  # it really tried
        still_on_k2()

        # the members said so to the gateway as well (signed refusal reports, kept on the membership)
        def reported() -> dict[str, str]:
            return {m["meter_id"]: m["refusal"]["detail"] for m in sc.group(GROUP)["members"] if "refusal" in m}

        wait_for("both refusals reported to the gateway", lambda: set(honest) <= set(reported()), 20)
        assert all(reported()[m].startswith("wrong_role: ") and gw_id in reported()[m] for m in honest), reported()
    finally:
        fleet.stop()
        sc.stop()
