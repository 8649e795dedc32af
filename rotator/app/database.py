"""The database use cases that need neither Vault nor a provider: schema and the audit trail.

``rotator db upgrade``, ``rotator db current`` and ``rotator audit`` (show, verify, export)
run with only ``[database]`` (and ``[audit]``) usable, so they open the database alone
rather than a whole ``Runtime``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import datetime

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
from rotator.core.audit_chain import ChainReport, KeyRequired
from rotator.core.errors import ConfigError
from rotator.core.model import StoredEvent
from rotator.core.ports import RotationReader
from rotator.core.secret import Secret
from rotator.redaction import remember_secret

__all__ = ["chain_key", "database_engine", "database_password", "export_events",
           "open_reader", "schema_revisions", "upgrade_schema", "verify_audit_chain"]


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


def chain_key(config: Config) -> Secret | None:
    """The key of the audit chain's HMAC, if ``[audit]`` names one."""
    if config.audit is None:
        return None
    key = resolve_secret("audit.chain_key", config.audit.chain_key_env,
                         config.audit.chain_key_file)
    remember_secret(key)
    return key


@contextmanager
def open_reader(config: Config) -> Iterator[RotationReader]:
    """A reader of the configured database, refused (``SchemaError``) if its schema is behind."""
    with _open_repository(config) as repo:
        yield repo


@contextmanager
def _open_repository(config: Config) -> Iterator[SqlRepository]:
    key = chain_key(config)
    engine = database_engine(config)
    try:
        check_schema(engine)
        yield SqlRepository(engine, chain_key=key)
    finally:
        engine.dispose()


def verify_audit_chain(config: Config, target: str | None = None) -> ChainReport:
    """Walk the audit chains (of ``target``, default every target) for broken links.

    ``ConfigError`` if the chain is keyed and ``[audit]`` names no key to check it with.
    """
    with _open_repository(config) as repo:
        try:
            return repo.verify_chains(target)
        except KeyRequired as exc:
            raise ConfigError(f"{exc}: set [audit] chain_key_env or chain_key_file to verify "
                              "it", key="audit") from None


def export_events(config: Config, target: str | None = None, since: datetime | None = None,
                  *, until: datetime | None = None, rotation_id: str | None = None,
                  triggers: Collection[str] = ()) -> Iterator[StoredEvent]:
    """Every audit row (of ``target``, from ``since``, ...: ``RotationReader.events``'s
    filters), oldest first, streamed."""
    with _open_repository(config) as repo:
        yield from repo.stream_events(target, since, until=until, rotation_id=rotation_id,
                                      triggers=triggers)
