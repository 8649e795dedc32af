"""The SQLite database, its WAL files and its upgrade lock are created 0600 whatever the
umask: the audit trail (target names, key ids, fingerprints) is for rotator's user only."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from rotator.adapters.sql.schema import make_engine, upgrade


@pytest.fixture(autouse=True)
def _permissive_umask() -> Iterator[None]:
    previous = os.umask(0o022)   # the usual default: files 0644 unless created otherwise
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_rotator_db_upgrade_creates_the_database_and_its_lock_0600(tmp_path: Path) -> None:
    db = tmp_path / "rotator.db"
    upgrade(f"sqlite:///{db}")
    created = [db, tmp_path / "rotator.db.upgrade-lock"]
    created += [p for p in (tmp_path / "rotator.db-wal", tmp_path / "rotator.db-shm")
                if p.exists()]
    assert {p.name: oct(mode(p)) for p in created} == {p.name: "0o600" for p in created}


def test_first_use_creates_the_database_0600_wal_files_included(tmp_path: Path) -> None:
    db = tmp_path / "first.db"
    engine = make_engine(f"sqlite:///{db}")
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE t (x INTEGER)"))
            connection.execute(text("INSERT INTO t VALUES (1)"))
            wal = [tmp_path / "first.db-wal", tmp_path / "first.db-shm"]
            assert all(p.exists() for p in wal)   # WAL mode: both exist while connected
            assert [oct(mode(p)) for p in [db, *wal]] == ["0o600"] * 3
    finally:
        engine.dispose()


def test_an_existing_database_keeps_its_mode(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    db.touch(mode=0o640)
    db.chmod(0o640)    # the operator's choice (a group that backs it up, say)
    upgrade(f"sqlite:///{db}")
    assert mode(db) == 0o640
