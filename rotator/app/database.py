"""The database use cases that need neither Vault nor a provider: schema and the audit reader.

``rotator db upgrade``, ``rotator db current`` and ``rotator audit`` run with only
``[database]`` usable, so they open the database alone rather than a whole ``Runtime``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rotator.adapters.sql.repository import SqlRepository
from rotator.adapters.sql.schema import (
    check_schema,
    current_revision,
    head_revision,
    make_engine,
    upgrade,
)
from rotator.config.model import Config
from rotator.core.ports import RotationReader

__all__ = ["open_reader", "schema_revisions", "upgrade_schema"]


def upgrade_schema(config: Config) -> str:
    """Apply the migrations; the revision the database is at afterwards."""
    return upgrade(config.database.url)


def schema_revisions(config: Config) -> tuple[str | None, str]:
    """The database's schema revision (``None``: no schema yet) and the one this code needs."""
    return current_revision(config.database.url), head_revision()


@contextmanager
def open_reader(config: Config) -> Iterator[RotationReader]:
    """A reader of the configured database, refused (``SchemaError``) if its schema is behind."""
    engine = make_engine(config.database.url)
    try:
        check_schema(engine)
        yield SqlRepository(engine)
    finally:
        engine.dispose()
