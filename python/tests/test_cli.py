"""The command line as users run it: a real subprocess, JSON on stdout, table and progress on stderr."""

import json
import subprocess
import sys

REQUIRED = {
    "scheme",
    "suite",
    "n",
    "agree",
    "member_msg_bytes_max",
    "member_cpu_ms",
    "coordinator_cpu_ms",
    "total_bytes",
    "rounds",
}


def gridkey(*args, check=True):
    return subprocess.run(
        [sys.executable, "-m", "gridkey.cli", *args], capture_output=True, text=True, check=check, timeout=300
    )


def test_bench_protocol_json():
    out = gridkey("bench", "protocol", "--n", "3,5", "--repeat", "1", "--json")
    doc = json.loads(out.stdout)
    rows = doc["results"]
    assert {(r["scheme"], r["suite"], r["n"]) for r in rows} == {
        (s, suite, n)
        for s in ("bd-e2e", "bd-attested", "centralized", "lkh")
        for suite in ("GK1", "GK2")
        for n in (3, 5)
    }
    for r in rows:
        assert set(r) >= REQUIRED
        assert r["agree"] is True
        assert 0 < r["member_msg_bytes_max"] <= 200
        assert r["member_cpu_ms"] > 0 and r["total_bytes"] > 0
    assert "scheme" in out.stderr and "bd-e2e" in out.stderr  # the table goes to stderr


def test_bench_table_and_suite_filter():
    out = gridkey("bench", "protocol", "--n", "4", "--suite", "GK2", "--schemes", "bd-e2e", "--repeat", "1")
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("bd-e2e")]
    assert len(lines) == 1 and "GK2" in lines[0] and "yes" in lines[0]


def test_bad_arguments_get_clear_errors():
    bad = gridkey("bench", "protocol", "--n", "1,x", check=False)
    assert bad.returncode == 2 and "comma-separated integers" in bad.stderr
    bad = gridkey("bench", "protocol", "--n", "1", check=False)
    assert bad.returncode == 2 and "between 2 and 1024" in bad.stderr
    bad = gridkey("bench", "protocol", "--n", "3", "--schemes", "nope", check=False)
    assert bad.returncode == 2 and "unknown scheme" in bad.stderr
    helptext = gridkey("bench", "protocol", "--help").stdout
    assert "--json" in helptext and "group sizes" in helptext
