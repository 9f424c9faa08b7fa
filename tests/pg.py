"""A throwaway PostgreSQL cluster for tests: ``initdb`` + ``pg_ctl`` on a free port, removed afterwards.

The server binaries come from the Debian ``postgresql`` package (``/usr/lib/postgresql/<v>/bin``;
``scripts/install-system-deps.sh`` installs it). ``initdb`` refuses to run as root, so when the tests
run as root the cluster runs as the ``postgres`` user (``runuser``) in a temporary directory that user
owns. Authentication is ``trust`` and the server listens on 127.0.0.1 only; ``fsync`` is off.

If PostgreSQL is missing the tests fail with a pointer to the install script (``make test`` runs it
first); they are never skipped, so a missing PostgreSQL cannot pass silently.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import psycopg

INSTALL_HINT = "PostgreSQL server binaries (initdb, pg_ctl) not found: run scripts/install-system-deps.sh"
RUN_AS = "postgres"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be used here (the message says how to fix it)."""


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", path)) or (0,)


def find_bindir() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``: ``$PG_BINDIR``, the newest Debian one, or PATH."""
    candidates: list[str] = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(os.environ["PG_BINDIR"])
    candidates += sorted(
        (os.path.dirname(p) for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")), key=_version_key, reverse=True
    )
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(os.path.dirname(on_path))
    for d in candidates:
        if os.access(os.path.join(d, "initdb"), os.X_OK) and os.access(os.path.join(d, "pg_ctl"), os.X_OK):
            return Path(d)
    raise PostgresUnavailable(f"{INSTALL_HINT} (or install the server binaries and set PG_BINDIR)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    """One ``postgres`` server in a temporary directory; ``start()``, ``create_database()``, ``stop()``."""

    def __init__(self, *, bindir: Path | None = None) -> None:
        self.bindir = bindir or find_bindir()
        self.as_root = os.geteuid() == 0
        self.user: pwd.struct_passwd | None = None
        if self.as_root:
            try:
                self.user = pwd.getpwnam(RUN_AS)
            except KeyError:
                raise PostgresUnavailable(
                    f"running as root but there is no {RUN_AS!r} user to run the cluster as: {INSTALL_HINT}"
                ) from None
        self.base: Path | None = None
        self.port = 0
        self._running = False

    # --- paths --------------------------------------------------------------------------------

    @property
    def datadir(self) -> Path:
        assert self.base is not None
        return self.base / "data"

    @property
    def sockdir(self) -> Path:
        assert self.base is not None
        return self.base / "sock"

    @property
    def logfile(self) -> Path:
        assert self.base is not None
        return self.base / "postgres.log"

    # --- process control ----------------------------------------------------------------------

    def _run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / argv[0]), *argv[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", RUN_AS, "--", *cmd]
        # cwd: the server user must be able to read its working directory
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.base, check=False)

    def _check(self, what: str, proc: subprocess.CompletedProcess[str]) -> None:
        if proc.returncode != 0:
            log = self.logfile.read_text(errors="replace")[-4000:] if self.logfile.exists() else ""
            raise RuntimeError(f"{what} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n{log}")

    def start(self, attempts: int = 3) -> PgCluster:
        """initdb a fresh cluster and start it on a free port (retrying if another process took the port)."""
        self.base = Path(tempfile.mkdtemp(prefix="gridkey-pg-"))
        atexit.register(self.stop)
        self.sockdir.mkdir()
        if self.user is not None:
            for p in (self.base, self.sockdir):
                os.chown(p, self.user.pw_uid, self.user.pw_gid)
        os.chmod(self.base, 0o700)
        initdb = ["initdb", "-D", str(self.datadir), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"]
        self._check("initdb", self._run(*initdb, "--no-sync"))
        last: Exception | None = None
        for _ in range(attempts):
            self.port = _free_port()
            opts = (
                f"-p {self.port} -k {self.sockdir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            )
            proc = self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-o", opts, "-w", "start")
            if proc.returncode == 0:
                self._running = True
                return self
            last = RuntimeError(f"pg_ctl start on port {self.port} failed:\n{proc.stdout}{proc.stderr}")
            self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "stop")
        self.stop()
        raise RuntimeError(f"{last}\n{self.logfile.read_text(errors='replace')[-4000:]}")

    def stop(self) -> None:
        """Stop the server (immediate: nothing here needs a clean shutdown) and delete the directory."""
        if self.base is None:
            return
        if self._running or (self.datadir / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "-t", "30", "stop", timeout=60)
        self._running = False
        shutil.rmtree(self.base, ignore_errors=True)
        self.base = None

    # --- databases ----------------------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        """The URL form ``gridkey --db`` takes (psycopg 3 is chosen by the store)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[Any]:
        return psycopg.connect(self.url(dbname), autocommit=True, connect_timeout=10)

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its URL."""
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"bad database name {name!r}")
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def query(self, url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on the database at ``url`` and return its rows."""
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []
