"""Persistence for the gateway: SQLite by default, PostgreSQL to scale out (see :mod:`.db`)."""

from .db import Store, StoreError

__all__ = ["Store", "StoreError"]
