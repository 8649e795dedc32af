"""The SQL state and audit store: tables, schema management, the repository, queries,
and the one answer to "which backend is this" (``backend``).

SQLite (embedded, one replica) and PostgreSQL (shared by replicas) through SQLAlchemy 2.0;
Alembic (``migrations/`` at the repository root, the package ``rotator.migrations`` once
built) owns the schema.
"""

from __future__ import annotations

from rotator.adapters.sql.backend import backend, is_sqlite
from rotator.adapters.sql.repository import SqlRepository
from rotator.adapters.sql.schema import (
    check_schema,
    current_revision,
    head_revision,
    make_engine,
    upgrade,
)

__all__ = [
    "SqlRepository",
    "backend",
    "check_schema",
    "current_revision",
    "head_revision",
    "is_sqlite",
    "make_engine",
    "upgrade",
]
