"""The production layout: the CA runs elsewhere, the gateway holds its certificate and serves the
CRL file the CA publishes. The gateway host holds no CA key, so it cannot mint members; and a
revocation made at the CA reaches the meters through the gateway (which follows it too, though
its API never heard of it, and keeps following it if the CRL file goes missing), and a gateway
that withholds the CRL gets no session once the last one is too old (revocation fails closed).
"""

from __future__ import annotations

import subprocess
import sys
import time

from cryptography import x509

from gridkey.datadir import DataDir
from gridkey.protocol.policy import MemberPolicy
from helpers import FleetRunner, SidecarProc, wait_for

METERS = ["x-1", "x-2", "x-3"]


def gridkey(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "gridkey.cli", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stderr + out.stdout


def test_a_gateway_without_the_ca_key_relays_the_cas_revocations_and_cannot_withhold_them(tmp_path):
    ca = DataDir(tmp_path / "ca-host")
    site = DataDir(tmp_path / "gateway-host")
    gridkey("ca", "init", "--data", str(ca.path))
    gridkey("ca", "issue", "--data", str(ca.path), "--id", "gw-prod", "--role", "gateway",
            "--out", str(site.path / "gateway"))  # fmt: skip
    crl = tmp_path / "published.crl"

    def publish() -> None:
        gridkey("ca", "crl", "--data", str(ca.path), "--out", str(crl))

    publish()
    sc = SidecarProc(tmp_path / "sc", data=site, extra_args=(
        "--ca-cert", str(ca.ca_dir / "ca-cert.pem"), "--crl", str(crl)))  # fmt: skip
    sc.start()
    # meters that want a CRL at most 8 s old, and look for a new one every 0.5 s
    fleet = FleetRunner(sc, METERS, ca=ca, crl_refresh_s=0.5, policy=MemberPolicy(max_crl_age_ms=8000))
    try:
        assert not list(site.path.rglob("ca-key.pem")), "a CA key on the gateway host"
        assert "lab layout" not in sc.tail(200)
        fleet.start()
        publish()
        sc.api("POST", "/v1/groups", json={"group_id": "prod", "members": METERS})
        fleet.wait_epoch("prod", 1, METERS)

        # 1. revoked at the CA and published: the meters learn it through the gateway, which follows it
        x3 = next(a for a in fleet.fleet.agents if a.meter_id == "x-3")
        gridkey(
            "ca", "revoke", "--data", str(ca.path), f"{x509.load_der_x509_certificate(x3.cert_der).serial_number:x}"
        )
        publish()

        def evicted() -> set[str]:
            return {m for m, k, i in fleet.events if k == "peer_revoked" and i["member_id"] == "x-3"}

        wait_for("x-1 and x-2 drop x-3 from their directories", lambda: {"x-1", "x-2"} <= evicted(), 10)
        sc.api("POST", "/v1/groups/prod/rekey")
        fleet.wait_epoch("prod", 2, ["x-1", "x-2"])
        assert sc.group("prod")["epoch_members"] == ["x-1", "x-2"]

        # 2. the CRL goes missing. The gateway keeps what earlier CRLs revoked (x-3 stays out), and
        # once the last CRL the meters hold is older than their 8 s limit, no session starts at all
        crl.unlink()
        time.sleep(9.0)
        sc.api("POST", "/v1/groups/prod/rekey")

        def refused(reason: str) -> set[str]:
            return {m for m, k, i in fleet.events if k == "start_refused" and i["reason"] == reason}

        wait_for("x-1 and x-2 refuse without a fresh CRL", lambda: {"x-1", "x-2"} <= refused("no_fresh_crl"), 30)
        assert all(e == 2 for e, _ in fleet.key_ids("prod", ["x-1", "x-2"]).values())
        assert "x-3" not in sc.group("prod")["session"]["members"]
    finally:
        fleet.stop()
        sc.stop()


def test_serve_with_an_external_ca_refuses_a_data_dir_holding_a_ca_key(tmp_path):
    lab = DataDir(tmp_path / "lab")
    gridkey("ca", "init", "--data", str(lab.path))  # a local CA: ca-key.pem in lab/ca/
    out = subprocess.run(
        [sys.executable, "-m", "gridkey.cli", "serve", "--data", str(lab.path), "--no-coap", "--no-http",
         "--ca-cert", str(lab.ca_dir / "ca-cert.pem")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "ca-key.pem exists" in out.stderr and "Traceback" not in out.stderr
