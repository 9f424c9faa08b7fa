"""The store: an SQLAlchemy engine with the right settings per database, and Alembic migrations.

SQLite (the default, one file under the data dir) runs in WAL mode; write transactions start with
``BEGIN IMMEDIATE`` so that two writers never deadlock on a lock upgrade. PostgreSQL (``--db
postgresql://…``) is what lets several ``gridkey serve`` replicas share state; rows that serialise
work (a group, a session, the audit head) are read ``FOR UPDATE`` inside write transactions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, Select, create_engine, event


class StoreError(RuntimeError):
    """The database is unreachable or in an unexpected state."""


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


class Store:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.is_postgres = url.startswith(("postgresql", "postgres"))
        if not (self.is_sqlite or self.is_postgres):
            raise StoreError(f"unsupported database URL {url.split(':', 1)[0]!r}: use sqlite:/// or postgresql://")
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        if self.is_sqlite:
            self.engine: Engine = create_engine(
                url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30}
            )
            event.listen(self.engine, "connect", _sqlite_on_connect)
            event.listen(self.engine, "begin", _sqlite_on_begin)
        else:
            self.engine = create_engine(url, echo=echo, pool_size=8, max_overflow=8, pool_pre_ping=True)

    @classmethod
    def for_tests(cls, path: Path) -> Store:
        return cls(sqlite_url(path))

    def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent; safe for concurrent replicas on PG)."""
        cfg = Config()
        cfg.set_main_option("script_location", str(files("gridkey.store") / "migrations"))
        with self.engine.begin() as conn:
            if self.is_postgres:  # one replica migrates at a time
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(4242)")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A read-write transaction (SQLite: BEGIN IMMEDIATE)."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(gridkey_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction that sees one snapshot: several SELECTs (a group, its members and its
        latest epoch) must not straddle another replica's commit. SQLite's WAL transactions already
        do; PostgreSQL's default READ COMMITTED takes a new snapshot per statement, so reads run at
        REPEATABLE READ (which never fails a transaction that only reads)."""
        with self.engine.connect() as conn:
            if self.is_postgres:
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    def locked(self, stmt: Select) -> Select:
        """``SELECT … FOR NO KEY UPDATE`` on PostgreSQL (SQLite already holds the write lock).

        NO KEY UPDATE, because no GridKey write changes a primary key: it does not block the
        KEY SHARE locks that foreign-key checks take, which plain FOR UPDATE would.
        """
        return stmt.with_for_update(key_share=True) if self.is_postgres else stmt

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_on_connect(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None  # let the "begin" hook below issue BEGIN itself
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_on_begin(conn: Connection) -> None:
    write = conn.get_execution_options().get("gridkey_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


__all__ = ["Store", "StoreError", "sqlite_url"]
