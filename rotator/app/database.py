"""The database use cases that need neither Vault nor a provider: schema and the audit reader.

``rotator db upgrade``, ``rotator db current`` and ``rotator audit`` run with only
``[database]`` usable, so they open the database alone rather than a whole ``Runtime``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine

from rotator.adapters.sql.repository import SqlRepository
from rotator.adapters.sql.schema import (
    check_schema,
    current_revision,
    head_revision,
    make_engine,
    upgrade,
)
from rotator.config.model import Config
from rotator.config.secret_sources import resolve_secret
from rotator.core.ports import RotationReader
from rotator.core.secret import Secret
from rotator.redaction import remember_secret

__all__ = ["database_engine", "database_password", "open_reader", "schema_revisions",
           "upgrade_schema"]


def database_password(config: Config) -> Secret | None:
    """The password ``[database] password_file`` holds (registered with the redactor), or
    ``None``: the URL, libpq's own sources (PGPASSFILE, ~/.pgpass) or trust then decide."""
    if config.database.password_file is None:
        return None
    password = resolve_secret("database.password", None, config.database.password_file)
    remember_secret(password)
    return password


def database_engine(config: Config) -> Engine:
    """An engine on the configured database, with its password."""
    return make_engine(config.database.url, database_password(config))


def upgrade_schema(config: Config) -> str:
    """Apply the migrations; the revision the database is at afterwards."""
    return upgrade(config.database.url, database_password(config))


def schema_revisions(config: Config) -> tuple[str | None, str]:
    """The database's schema revision (``None``: no schema yet) and the one this code needs."""
    return current_revision(config.database.url, database_password(config)), head_revision()


@contextmanager
def open_reader(config: Config) -> Iterator[RotationReader]:
    """A reader of the configured database, refused (``SchemaError``) if its schema is behind."""
    engine = database_engine(config)
    try:
        check_schema(engine)
        yield SqlRepository(engine)
    finally:
        engine.dispose()
