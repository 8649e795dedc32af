"""Alembic environment of rotator: online migrations only, with no alembic.ini.

``rotator.adapters.sql.schema`` builds the ``Config`` in code and hands over an open
connection in ``config.attributes["connection"]``; failing that, ``sqlalchemy.url`` is
used. The version table is unqualified, so with a PostgreSQL ``search_path`` it lives in
the selected schema, next to the tables it describes.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import Connection

config = context.config


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection and no sqlalchemy.url given to the migrations")
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("rotator's migrations run online only: use `rotator db upgrade`")
run_migrations_online()
