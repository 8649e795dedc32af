"""Which database an engine, connection, dialect or URL is on: the one place that asks.

rotator runs on two backends and branches on them in a few places (SQLite's pragmas and
naive timestamps, PostgreSQL's advisory lock and ``ON CONFLICT`` dialect, one replica or
many); they all ask ``backend`` rather than reading dialect names or URL prefixes.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy.engine import URL, Connection, Dialect, Engine, make_url

__all__ = ["POSTGRESQL", "SQLITE", "SUPPORTED", "backend", "is_sqlite"]

SQLITE: Final = "sqlite"
POSTGRESQL: Final = "postgresql"
SUPPORTED: Final = (SQLITE, POSTGRESQL)


def backend(of: Engine | Connection | Dialect | URL | str) -> str:
    """The backend's name (``"sqlite"``, ``"postgresql"``; any other is unsupported)."""
    if isinstance(of, Engine | Connection):
        return str(of.dialect.name)
    if isinstance(of, Dialect):
        return str(of.name)
    return make_url(of).get_backend_name()


def is_sqlite(of: Engine | Connection | Dialect | URL | str) -> bool:
    return backend(of) == SQLITE
