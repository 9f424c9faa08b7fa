"""Pytest fixtures for PostgreSQL (registered by ``pytest_plugins`` in conftest.py).

``pg_cluster`` is one throwaway server per test session (per xdist worker), started on first use;
``pg_url`` is a fresh, empty database on it for each test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pg import PgCluster, PostgresUnavailable


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A running PostgreSQL server, stopped and deleted at the end of the session (even after failures)."""
    try:
        cluster = PgCluster()
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    """``postgresql://postgres@127.0.0.1:PORT/<fresh database>`` for this test alone."""
    return pg_cluster.create_database()
