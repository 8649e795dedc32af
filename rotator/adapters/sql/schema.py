"""Engines and schema management: the Alembic ``Config`` built in code, upgrade, checks.

The migrations live in ``migrations/`` at the repository root, which the build maps to the
package ``rotator.migrations``: ``importlib.resources`` finds them in a wheel and in an
editable install alike (``migrations_dir``). There is no ``alembic.ini``: ``rotator db
upgrade`` calls ``upgrade(url)``, and the daemon calls ``check_schema(engine)`` before it starts.

A PostgreSQL URL may select a schema with ``?options=-csearch_path%3D<schema>``: tables,
trigger function and ``alembic_version`` are then all created in that schema.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine, make_url

from rotator.adapters.sql.backend import POSTGRESQL, SQLITE, backend, is_sqlite
from rotator.core.errors import ConfigError, SchemaError
from rotator.core.secret import Secret

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "MIGRATIONS_PACKAGE",
    "SCHEMA_HEAD",
    "alembic_config",
    "check_schema",
    "current_revision",
    "head_revision",
    "make_engine",
    "migrations_dir",
    "upgrade",
]

MIGRATIONS_PACKAGE = "rotator.migrations"
# The revision this code's tables match: what the daemon (and every command but `db`)
# requires. Alembic is imported only to upgrade: loaded, it and the migration scripts cost
# a daemon some 10 MiB of memory and each readiness check a parse of every script.
# tests/test_migrations.py holds this to Alembic's head.
SCHEMA_HEAD = "0010"

# How long SQLite waits for another writer before giving up (milliseconds).
SQLITE_BUSY_TIMEOUT_MS = 5000
# How long a PostgreSQL connect may take (seconds): a readiness check must not hang on it.
PG_CONNECT_TIMEOUT_S = 5
# Every transaction of rotator's is a few statements with no work between them. A process
# frozen inside one (SIGSTOP, a stalled VM) would hold its row locks, the lease row among
# them, and so keep every other replica from taking its targets over, for as long as the
# connection lives: the server ends such a session after this long instead.
PG_IDLE_IN_TRANSACTION = "10s"
# Connections kept for reuse, on either database (they are opened only as needed): one per
# thread that may hold one at once, 64 workers or `rotate --concurrency` at most plus the
# heartbeat, the sweep and the health checks. SQLAlchemy's default of 5 closed and
# reopened a connection for most transactions of 16 workers ("Connection pool is full,
# discarding connection").
POOL_SIZE = 64 + 4

_UPGRADE_HINT = "run `rotator db upgrade`"
# An arbitrary constant naming rotator's schema-upgrade lock among PostgreSQL advisory locks.
_UPGRADE_LOCK_KEY = 0x726F7461746F72


def migrations_dir() -> Path:
    """The folder of the package ``rotator.migrations``, as a filesystem path."""
    folder = files(MIGRATIONS_PACKAGE)
    # Alembic's script_location must be a folder on disk, which a wheel or an editable
    # install gives; a zipped install does not, and is refused rather than half-supported.
    if not isinstance(folder, Path):
        raise SchemaError("the migrations are not a folder on disk (a zipped install?)",
                          package=MIGRATIONS_PACKAGE)
    return folder


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _set_pg_session(dbapi_connection: Any, _record: Any) -> None:
    with dbapi_connection.cursor() as cursor:
        cursor.execute(f"SET idle_in_transaction_session_timeout = '{PG_IDLE_IN_TRANSACTION}'")
    dbapi_connection.commit()


def make_engine(url: str, password: Secret | None = None) -> Engine:
    """An engine for ``url``, tuned per backend.

    SQLite: WAL journal, a 5 s busy timeout and foreign keys, set on every new connection.
    PostgreSQL: ``pool_pre_ping``, so a replica survives a database restart, and sessions
    that the server ends when they idle in a transaction (``PG_IDLE_IN_TRANSACTION``).
    ``password`` (``[database] password_file``) is handed to the driver, never put in the
    URL, so no rendering of the URL can show it.
    """
    parsed = make_url(url)
    name = backend(parsed)
    if name == SQLITE:
        if not parsed.query.get("uri"):  # a URI filename is SQLite's to resolve and create
            _create_private(_sqlite_file(url))
        engine = create_engine(parsed, pool_size=POOL_SIZE)
        event.listen(engine, "connect", _set_sqlite_pragmas)
        return engine
    if name == POSTGRESQL:
        # A plain postgresql:// URL would pick psycopg2; rotator ships psycopg 3.
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        connect_args: dict[str, Any] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
        if password is not None:
            connect_args["password"] = password.reveal()
        engine = create_engine(parsed, pool_pre_ping=True, pool_size=POOL_SIZE,
                               connect_args=connect_args)
        event.listen(engine, "connect", _set_pg_session)
        return engine
    raise SchemaError(f"unsupported database {name!r}: use sqlite or postgresql", url=_safe(url))


def alembic_config(directory: Path | None = None) -> Config:
    """An Alembic ``Config`` for rotator's migrations, built without any ini file."""
    from alembic.config import Config  # noqa: PLC0415 (see SCHEMA_HEAD)

    cfg = Config()
    cfg.set_main_option("script_location", str(directory or migrations_dir()))
    return cfg


def head_revision() -> str:
    """The newest revision of the migration scripts (the one ``upgrade`` goes to)."""
    from alembic.script import ScriptDirectory  # noqa: PLC0415 (see SCHEMA_HEAD)

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise SchemaError("no migrations found", directory=str(migrations_dir()))
    return head


def upgrade(url: str, password: Secret | None = None) -> str:
    """Apply every missing migration to the database at ``url``; returns the head revision.

    Concurrent upgrades (replicas' init containers) run one at a time: a PostgreSQL
    advisory lock, or on SQLite an exclusive lock on a file beside the database.
    """
    with _sqlite_upgrade_lock(url):
        return _upgrade(url, password)


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL; None for another backend or an in-memory database.

    ``ConfigError`` (exit 2, naming the folder) if the folder it would be in does not
    exist: SQLite creates a database file, never its folder, and said only "unable to open
    database file" (or a traceback, from the upgrade lock beside it).
    """
    parsed = make_url(url)
    if not is_sqlite(parsed) or parsed.database in (None, "", ":memory:") \
            or parsed.query.get("uri"):
        return None
    path = Path(parsed.database)
    if not path.parent.is_dir():
        raise ConfigError(
            "the SQLite database's folder does not exist: create it (rotator creates the "
            "file, not its folder), or point [database] url elsewhere",
            {"database.url": f"no folder {path.parent.absolute()} for the database file"})
    return path


# The audit trail is for rotator's eyes: its files are created readable by their owner only
# (SQLite gives the -wal and -shm files the mode of the database file), whatever the umask.
_PRIVATE_MODE = 0o600


def _create_private(path: Path | None) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist (SQLite takes an empty file
    as a new database). Any other problem is left for SQLite to report as it always does."""
    if path is None:
        return
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _PRIVATE_MODE))


@contextlib.contextmanager
def _sqlite_upgrade_lock(url: str) -> Iterator[None]:
    database = _sqlite_file(url)
    if database is None:
        yield
        return
    lock_path = database.with_name(database.name + ".upgrade-lock")
    descriptor = os.open(lock_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, _PRIVATE_MODE)
    with os.fdopen(descriptor, "ab") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # released when the file closes
        yield


def _upgrade(url: str, password: Secret | None) -> str:
    from alembic import command  # noqa: PLC0415 (see SCHEMA_HEAD)
    from alembic.util.exc import CommandError  # noqa: PLC0415 (see SCHEMA_HEAD)

    cfg = alembic_config()
    engine = make_engine(url, password)
    try:
        with engine.begin() as connection:
            if backend(connection) == POSTGRESQL:
                # Replicas' init containers may upgrade at once: one at a time, the others
                # then find nothing left to do. Released at commit.
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                   {"key": _UPGRADE_LOCK_KEY})
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")
    except CommandError as exc:
        # Typically a revision in the database that this code does not know (a newer rotator).
        raise SchemaError(f"cannot upgrade the database schema: {exc}", url=_safe(url)) from exc
    finally:
        engine.dispose()
    return head_revision()


def _revision_of(engine: Engine) -> str | None:
    """What ``alembic_version`` holds (in the URL's schema on PostgreSQL); ``None`` if the
    table is not there. Read with plain SQL, so that checking needs no Alembic."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    if len(rows) > 1:
        raise SchemaError("database schema has several Alembic heads: "
                          + ", ".join(sorted(str(row[0]) for row in rows)))
    return str(rows[0][0]) if rows else None


def current_revision(url: str, password: Secret | None = None) -> str | None:
    """The revision the database at ``url`` is at; ``None`` if it has no rotator schema."""
    engine = make_engine(url, password)
    try:
        return _revision_of(engine)
    finally:
        engine.dispose()


def check_schema(engine: Engine) -> None:
    """Raise ``SchemaError`` unless the database is exactly at this code's head revision."""
    current = _revision_of(engine)
    head = SCHEMA_HEAD
    if current is None:
        raise SchemaError(f"database has no rotator schema: {_UPGRADE_HINT}")
    if current == head:
        return
    if not _is_known(current):
        raise SchemaError(
            f"database schema is at {current}, unknown to this rotator (it needs {head}):"
            " is a newer rotator using this database?"
        )
    raise SchemaError(
        f"database schema is at {current}, this rotator needs {head}: {_UPGRADE_HINT}"
    )


def _is_known(revision: str) -> bool:
    from alembic.script import ScriptDirectory  # noqa: PLC0415 (see SCHEMA_HEAD)
    from alembic.util.exc import CommandError  # noqa: PLC0415 (see SCHEMA_HEAD)

    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


def _safe(url: str) -> str:
    """The URL without its password, for error context."""
    return make_url(url).render_as_string(hide_password=True)
