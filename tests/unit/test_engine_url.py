"""Database URLs as users write them map onto the drivers rotator ships."""

from __future__ import annotations

from rotator.adapters.sql.backend import backend, is_sqlite
from rotator.adapters.sql.schema import make_engine


def test_plain_postgresql_url_uses_psycopg3() -> None:
    engine = make_engine("postgresql://rotator@db.internal:5432/rotator")
    try:
        assert engine.dialect.driver == "psycopg"
    finally:
        engine.dispose()


def test_sqlite_url_is_kept(tmp_path: object) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/x.db")
    try:
        assert engine.dialect.name == "sqlite"
    finally:
        engine.dispose()


def test_one_backend_answer_for_urls_engines_connections_and_dialects(tmp_path: object) -> None:
    assert backend("postgresql://rotator@db.internal/rotator") == "postgresql"
    assert backend("postgresql+psycopg://rotator@db.internal/rotator") == "postgresql"
    assert backend("mysql://x@y/z") == "mysql"
    engine = make_engine(f"sqlite:///{tmp_path}/x.db")
    try:
        with engine.connect() as connection:
            assert {backend(engine), backend(connection), backend(engine.dialect)} == {"sqlite"}
        assert is_sqlite(engine) and is_sqlite(engine.url)
    finally:
        engine.dispose()
