"""GridKey on PostgreSQL: one sidecar, two replicas sharing one database, and concurrent migrations.

Everything is real: a throwaway PostgreSQL cluster (tests/pg.py), `gridkey serve` processes, and
meter agents talking CoAP on 127.0.0.1. Replicas share nothing but the database and the data dir
(CA + gateway identity); each sees the other's events through its 200 ms event poller.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from cryptography import x509
from pg import PgCluster
from test_e2e import run_lifecycle

from gridkey.crypto.ca import LocalCA
from gridkey.crypto.identity import cert_to_pem
from gridkey.datadir import DataDir
from helpers import FleetRunner, SidecarProc, committed_session_problems, epoch_problems, wait_for

LIVE = ("round1", "round2", "confirm")


class Stack:
    """Sidecars and fleets started by a test; torn down (fleets first) even when the test fails."""

    def __init__(self) -> None:
        self.sidecars: list[SidecarProc] = []
        self.fleets: list[FleetRunner] = []

    def sidecar(self, sc: SidecarProc, *, start: bool = True) -> SidecarProc:
        self.sidecars.append(sc)
        return sc.start() if start else sc

    def fleet(self, fleet: FleetRunner) -> FleetRunner:
        self.fleets.append(fleet)
        return fleet.start()

    def stop_fleet(self, fleet: FleetRunner) -> None:
        self.fleets.remove(fleet)
        fleet.stop()

    def close(self) -> None:
        for fleet in reversed(self.fleets):
            with contextlib.suppress(Exception):
                fleet.stop()
        for sc in self.sidecars:
            with contextlib.suppress(Exception):
                sc.stop()


@pytest.fixture
def stack() -> Iterator[Stack]:
    s = Stack()
    try:
        yield s
    finally:
        s.close()


def enroll(sc: SidecarProc, data: DataDir, meter_id: str) -> dict:
    """Issue a certificate from the shared CA and enrol it through the operator API of ``sc``."""
    _, cert = data.issue_identity(meter_id, "meter", "GK1")
    return sc.api("POST", "/v1/meters", json={"cert_pem": cert_to_pem(cert).decode()})


def audit_verify_cli(db_url: str, data: Path) -> dict:
    """`gridkey audit verify --db URL` as an operator runs it; asserts exit status 0."""
    proc = subprocess.run(
        [sys.executable, "-m", "gridkey.cli", "audit", "verify", "--db", db_url, "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"audit verify failed ({proc.returncode}): {proc.stdout}{proc.stderr}"
    result = json.loads(proc.stdout)
    assert result["ok"] is True and result["entries"] > 0, result
    return result


def assert_one_key_per_epoch(pg: PgCluster, url: str, group_id: str, epochs: int | None = None) -> dict[int, str]:
    """Epochs run 1..N without gaps, each with one committed session (the epochs table's primary key
    alone does not tie sessions to epochs), and no key id repeats; returns {epoch: key id}."""
    assert committed_session_problems(lambda sql: pg.query(url, sql)) == []
    keys = {e: k.hex() for e, k in pg.query(url, "SELECT epoch, key_id FROM epochs WHERE group_id = %s", (group_id,))}
    assert keys, f"no epochs committed for {group_id}"
    numbers = sorted(keys)
    assert numbers == list(range(1, len(numbers) + 1)), numbers
    if epochs is not None:
        assert len(numbers) == epochs, numbers
    assert len(set(keys.values())) == len(keys), "a key id was reused across epochs"
    return keys


def test_lifecycle_on_postgres(pg_cluster: PgCluster, pg_url: str, tmp_path: Path, stack: Stack) -> None:
    """The full single-sidecar lifecycle (join, command, leave, revoke, periodic rekeys) passes on PostgreSQL.

    Same scenario as test_e2e's SQLite run (``run_lifecycle``), with ``--db postgresql://…``; afterwards
    the audit chain verifies from the command line and the database holds one key id per epoch.
    """
    sc = stack.sidecar(SidecarProc(tmp_path / "sc", db_url=pg_url, controller=True))
    fleet = stack.fleet(FleetRunner(sc, [f"pg-meter-{i}" for i in range(1, 6)]))
    run_lifecycle(sc, fleet)
    keys = assert_one_key_per_epoch(pg_cluster, pg_url, "feeder-1")
    assert sc.group("feeder-1")["key_id"] == keys[max(keys)]
    assert not (tmp_path / "sc" / "data" / "gridkey.db").exists(), "the sidecar used SQLite, not PostgreSQL"
    audit_verify_cli(pg_url, sc.data.path)


def test_two_replicas_share_one_database(pg_cluster: PgCluster, pg_url: str, tmp_path: Path, stack: Stack) -> None:
    """Two `gridkey serve` replicas on one database act as one gateway, and survive losing one of them.

    Half the meters talk CoAP to replica A, half to replica B. Operations alternate between replicas
    (create on A, rekey on B, join on A, leave on B, revoke on A); every session needs messages that
    arrive at both replicas, and every member commits the same key id for each epoch. Then A is
    SIGKILLed while a rekey (requested on B) is in flight: B alone times the session out, excludes
    A's unreachable meters, and commits the epoch for its own meters; once A's meters are restarted
    against B, they rejoin and B alone brings them into the next epoch. Finally the audit chain
    verifies (`gridkey audit verify --db`) and no epoch ever has two key ids.
    """
    data = DataDir(tmp_path / "data")
    data.init()  # shared CA + gateway identity: both replicas coordinate as the same gateway
    a = stack.sidecar(SidecarProc(tmp_path / "a", db_url=pg_url, data=data, name="replica-a"))
    b = stack.sidecar(SidecarProc(tmp_path / "b", db_url=pg_url, data=data, name="replica-b"))
    ids_a = ["a-1", "a-2", "a-3", "a-4"]
    ids_b = ["b-1", "b-2", "b-3", "b-4"]
    late = "b-5"
    fleet_a = stack.fleet(FleetRunner(a, ids_a))  # server defaults to A's CoAP endpoint
    fleet_b = stack.fleet(FleetRunner(b, [*ids_b, late]))
    g = "replicated"

    def same_key(epoch: int, on_a: list[str], on_b: list[str]) -> str:
        key_a = fleet_a.wait_epoch(g, epoch, on_a, timeout=30)
        key_b = fleet_b.wait_epoch(g, epoch, on_b, timeout=30)
        assert key_a == key_b, f"epoch {epoch}: A's meters hold {key_a}, B's meters hold {key_b}"
        assert a.group(g)["key_id"] == b.group(g)["key_id"] == key_a
        return key_a

    # create through A
    a.api("POST", "/v1/groups", json={"group_id": g, "members": ids_a + ids_b})
    k1 = same_key(1, ids_a, ids_b)
    # rekey through B
    b.api("POST", f"/v1/groups/{g}/rekey")
    k2 = same_key(2, ids_a, ids_b)
    # join through A (the new meter is one of B's)
    a.api("POST", f"/v1/groups/{g}/members", json={"members": [late]})
    k3 = same_key(3, ids_a, [*ids_b, late])
    # leave through B (one of A's meters)
    b.api("DELETE", f"/v1/groups/{g}/members/a-2")
    a_stay = ["a-1", "a-3", "a-4"]
    k4 = same_key(4, a_stay, [*ids_b, late])
    assert fleet_a.key_ids(g, ["a-2"])["a-2"] == (3, k3)
    # revoke through A
    a.api("POST", "/v1/meters/a-3/revoke", json={"reason": "keyCompromise"})
    a_stay = ["a-1", "a-4"]
    k5 = same_key(5, a_stay, [*ids_b, late])
    assert fleet_a.key_ids(g, ["a-3"])["a-3"] == (4, k4)
    assert len({k1, k2, k3, k4, k5}) == 5

    # every session so far committed at the first attempt, with members on both replicas
    sessions = pg_cluster.query(pg_url, "SELECT epoch, state, result FROM sessions WHERE group_id = %s", (g,))
    assert sorted(sessions) == [(e, "committed", "committed") for e in range(1, 6)], sessions

    # A dies (SIGKILL) while a rekey requested through B is in flight
    b.api("POST", f"/v1/groups/{g}/rekey")
    a.kill()
    in_flight = b.group(g)
    assert in_flight["epoch"] == 5 and in_flight["session"]["state"] in LIVE, in_flight["session"]
    assert in_flight["session"]["epoch"] == 6

    # B alone: the session times out without A's (unreachable) meters, restarts, commits for B's meters
    k6 = fleet_b.wait_epoch(g, 6, [*ids_b, late], timeout=30)
    epoch6 = next(e for e in b.api("GET", f"/v1/groups/{g}/epochs") if e["epoch"] == 6)
    assert epoch6["key_id"] == k6
    assert sorted(epoch6["members"]) == sorted([*ids_b, late])
    assert epoch6["trigger"] == "restart:timeout"
    assert {m["meter_id"]: m["status"] for m in b.group(g)["members"]}["a-1"] == "lagging"

    # A's meters come back, now talking to B: they rejoin and B alone rekeys them in
    stack.stop_fleet(fleet_a)
    fleet_a = stack.fleet(FleetRunner(b, a_stay))
    everyone = sorted([*a_stay, *ids_b, late])

    def all_back() -> int | None:
        grp = b.group(g)
        return grp["epoch"] if sorted(grp["epoch_members"]) == everyone else None

    final = wait_for("A's meters back in the group via B", all_back, timeout=30)
    assert final >= 7
    k_final = fleet_b.wait_epoch(g, final, [*ids_b, late])
    assert fleet_a.wait_epoch(g, final, a_stay) == k_final
    assert b.group(g)["key_id"] == k_final

    keys = assert_one_key_per_epoch(pg_cluster, pg_url, g, epochs=final)
    assert [keys[e] for e in range(1, 7)] == [k1, k2, k3, k4, k5, k6]
    assert b.api("GET", "/v1/audit/verify")["ok"] is True
    audit_verify_cli(pg_url, data.path)


def test_concurrent_starts_migrate_once(pg_cluster: PgCluster, pg_url: str, tmp_path: Path, stack: Stack) -> None:
    """Several `gridkey serve` processes starting at once on an empty database migrate it exactly once.

    The test holds the migration advisory lock itself, so every replica provably blocks in ``migrate``
    (pg_locks shows them all waiting); then it lets go and all of them must come up against one
    schema: one alembic version row, one audit chain head, and a working API on each.
    """
    data = DataDir(tmp_path / "data")
    data.init()
    replicas = [SidecarProc(tmp_path / f"r{i}", db_url=pg_url, data=data, name=f"r{i}") for i in range(3)]
    for sc in replicas:
        stack.sidecar(sc, start=False)
    with pg_cluster.connect(pg_url.rsplit("/", 1)[1]) as holder:
        holder.execute("BEGIN")
        holder.execute("SELECT pg_advisory_xact_lock(4242)")
        errors: list[BaseException] = []

        def start(sc: SidecarProc) -> None:
            try:
                sc.start(timeout=90)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(sc,)) for sc in replicas]
        for t in threads:
            t.start()
        waiting = """SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                     WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = current_database()"""
        wait_for(
            "every replica to wait for the migration lock",
            lambda: holder.execute(waiting).fetchone()[0] == len(replicas),
            timeout=60,
        )
        tables = holder.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
        assert tables == 0, "a replica migrated without holding the lock"
        holder.execute("COMMIT")  # release: they now migrate one at a time
    for t in threads:
        t.join(120)
    assert not errors, errors
    head = ScriptDirectory(str(files("gridkey.store") / "migrations")).get_current_head()
    assert pg_cluster.query(pg_url, "SELECT version_num FROM alembic_version") == [(head,)]
    assert pg_cluster.query(pg_url, "SELECT id, seq FROM audit_head") == [(1, 0)]
    for sc in replicas:
        assert sc.api("GET", "/v1/groups") == []
    # they really share one store: what one writes, the others read at once
    enroll(replicas[0], data, "m-1")
    for sc in replicas[1:]:
        assert sc.api("GET", "/v1/meters/m-1")["status"] == "active"


def test_replicas_agree_on_revocations(pg_url: str, tmp_path: Path, stack: Stack) -> None:
    """A revocation made through one replica is in every replica's CRL and in the data dir's CA files.

    Meters fetch the CRL from whichever replica they talk to, and a restarted replica reloads the CA
    from the data dir, so a revocation must not depend on which replica handled it.
    """
    data = DataDir(tmp_path / "data")
    data.init()
    a = stack.sidecar(SidecarProc(tmp_path / "a", db_url=pg_url, data=data, name="replica-a"))
    b = stack.sidecar(SidecarProc(tmp_path / "b", db_url=pg_url, data=data, name="replica-b"))
    serials = {int(enroll(a, data, m)["serial"], 16) for m in ("m-1", "m-2")}
    a.api("POST", "/v1/meters/m-1/revoke", json={"reason": "keyCompromise"})
    b.api("POST", "/v1/meters/m-2/revoke", json={"reason": "keyCompromise"})
    assert {a.api("GET", f"/v1/meters/{m}")["status"] for m in ("m-1", "m-2")} == {"revoked"}  # the store agrees
    on_disk = {r.serial for r in LocalCA.load(data.ca_dir).revocations}
    crls = {sc.name: {c.serial_number for c in x509.load_der_x509_crl(sc.http.get("/v1/crl").content)} for sc in (a, b)}
    assert on_disk >= serials, f"revoked.json lost a revocation: has {sorted(on_disk)}, want {sorted(serials)}"
    assert all(got >= serials for got in crls.values()), f"CRLs differ between replicas: {crls}"


def test_concurrent_changes_across_replicas(pg_cluster: PgCluster, pg_url: str, tmp_path: Path, stack: Stack) -> None:
    """Rekeys and membership changes issued at once through both replicas, while sessions run, still converge.

    Four clients hammer the two replicas (rekey on each, a member of A's toggled through B and one of
    B's toggled through A) for a few seconds; afterwards every member is back, holds the same key for
    the final epoch, no epoch has two key ids, the audit chain verifies, and PostgreSQL reports no
    deadlock (every write path locks the group row first, then the session row, then the audit head).
    """
    data = DataDir(tmp_path / "data")
    data.init()
    a = stack.sidecar(SidecarProc(tmp_path / "a", db_url=pg_url, data=data, name="replica-a"))
    b = stack.sidecar(SidecarProc(tmp_path / "b", db_url=pg_url, data=data, name="replica-b"))
    ids_a, ids_b = ["ha-1", "ha-2", "ha-3"], ["hb-1", "hb-2", "hb-3"]
    fleet_a = stack.fleet(FleetRunner(a, ids_a))
    fleet_b = stack.fleet(FleetRunner(b, ids_b))
    g = "busy"
    a.api("POST", "/v1/groups", json={"group_id": g, "members": ids_a + ids_b})
    fleet_a.wait_epoch(g, 1, ids_a)
    fleet_b.wait_epoch(g, 1, ids_b)
    log_offset = pg_cluster.logfile.stat().st_size

    failures: list[str] = []
    until = time.monotonic() + 4.0

    def hammer(sc: SidecarProc, member: str | None) -> None:
        present = True
        while time.monotonic() < until:
            if member is None:
                r = sc.http.post(f"/v1/groups/{g}/rekey")
            elif present:
                r = sc.http.delete(f"/v1/groups/{g}/members/{member}")
            else:
                r = sc.http.post(f"/v1/groups/{g}/members", json={"members": [member]})
            if r.status_code >= 500:
                failures.append(f"{sc.name} {r.request.method} {r.request.url.path}: {r.status_code}")
            elif member is not None and r.status_code < 300:
                present = not present
            time.sleep(0.05)
        if not present:
            sc.api("POST", f"/v1/groups/{g}/members", json={"members": [member]})

    workers = [
        threading.Thread(target=hammer, args=(a, None)),
        threading.Thread(target=hammer, args=(b, None)),
        threading.Thread(target=hammer, args=(b, "ha-3")),
        threading.Thread(target=hammer, args=(a, "hb-3")),
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)

    # one more rekey once the storm is over: every member must end up holding its key
    def quiet() -> int | None:
        grp = b.group(g)
        return grp["epoch"] if grp["session"]["state"] == "committed" else None

    before = wait_for("the last session of the storm to end", quiet, timeout=45)
    b.api("POST", f"/v1/groups/{g}/rekey")
    everyone = sorted(ids_a + ids_b)

    def converged() -> tuple[int, str] | None:
        grp = b.group(g)
        if grp["epoch"] <= before or grp["session"]["state"] != "committed":
            return None
        held = {**fleet_a.key_ids(g, ids_a), **fleet_b.key_ids(g, ids_b)}
        want = (grp["epoch"], grp["key_id"])
        ok = sorted(grp["epoch_members"]) == everyone and all(v == want for v in held.values())
        return want if ok else None

    final, key = wait_for("every member to hold the group's current key", converged, timeout=45)
    keys = assert_one_key_per_epoch(pg_cluster, pg_url, g, epochs=final)
    assert keys[final] == key
    # per epoch of the storm: every key id any meter established is the one committed for that epoch
    history = b.api("GET", f"/v1/groups/{g}/epochs", params={"limit": 1000})
    assert epoch_problems(history, fleet_a.events + fleet_b.events, g) == []
    audit_verify_cli(pg_url, data.path)

    with open(pg_cluster.logfile, errors="replace") as f:
        f.seek(log_offset)
        deadlocks = f.read().count("deadlock detected")
    # Lock order is group row -> session row -> audit head everywhere, with retries on the rare
    # transient error: no deadlock may surface, and no request may fail with a 5xx.
    assert not failures and not deadlocks, f"{deadlocks} deadlocks, {len(failures)} HTTP 5xx {failures[:3]}"
