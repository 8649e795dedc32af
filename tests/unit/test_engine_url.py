"""Database URLs as users write them map onto the drivers rotator ships."""

from __future__ import annotations

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
