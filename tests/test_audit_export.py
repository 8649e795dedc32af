"""``rotator audit export``: every row with its chain hash, streamed in constant memory."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from collections.abc import Callable
from contextlib import redirect_stdout
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from rotator.adapters.sql.backend import POSTGRESQL, backend
from rotator.adapters.sql.queries import STREAM_BATCH
from rotator.adapters.sql.repository import SqlRepository
from rotator.adapters.sql.tables import rotation_events
from rotator.cli.main import main
from rotator.cli.render import export_lines
from rotator.core.audit_chain import chain_hash
from tests.support import DATABASE_ONLY_CONFIG

# Enough rows that holding them all would show: each StoredEvent here is about 2 kB.
MANY = 20_000


def _fill(repo: SqlRepository, count: int) -> None:
    """``count`` chained events of target "app", inserted in bulk (no lease, no fence)."""
    at = datetime(2026, 11, 1, tzinfo=UTC)
    rows: list[dict[str, Any]] = []
    previous = ""
    for seq in range(1, count + 1):
        row = {"rotation_id": f"rot_{seq // 10}", "target": "app", "step": "create",
               "kind": "note", "action": "started", "result": None, "key_id": None,
               "fingerprint": None, "vault_version": None, "request_id": None,
               "op_id": None, "detail": "x" * 1500, "at": at + timedelta(seconds=seq),
               "lease_generation": 1}
        previous = chain_hash(row, seq, previous)
        rows.append({**row, "chain_seq": seq, "chain_hash": previous})
    with repo.engine.begin() as conn:
        conn.execute(rotation_events.insert(), rows)


def _peak(work: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_export_and_the_chain_walk_stream_in_constant_memory(
        repository: SqlRepository) -> None:
    _fill(repository, MANY)
    lines = 0
    last = ""

    def export() -> None:
        nonlocal lines, last
        for line in export_lines(repository.stream_events(), "jsonl"):
            lines += 1
            last = line

    cursors: list[str] = []

    def seen(_conn: object, cursor: object, statement: str, *_: object) -> None:
        if "FROM rotation_events" in statement:
            cursors.append(type(cursor).__name__)

    event.listen(repository.engine, "before_cursor_execute", seen)
    streamed = _peak(export)
    walked = _peak(repository.verify_chains)
    event.remove(repository.engine, "before_cursor_execute", seen)
    # On PostgreSQL the rows come through a server-side cursor, a batch per fetch (the
    # driver's own buffer, which tracemalloc cannot see, holds no more than that); SQLite's
    # cursor steps through the file as rows are read.
    if backend(repository.engine) == POSTGRESQL:
        assert cursors == ["ServerCursor", "ServerCursor"], cursors
    loaded = _peak(repository.events)
    print(f"peak memory: export {streamed}, walk {walked}, all rows loaded {loaded}")
    assert lines == MANY
    assert json.loads(last)["chain_seq"] == MANY
    # Holding every row costs tens of MB; streaming holds a batch or two at a time.
    assert loaded > 20 * 2**20
    batch = STREAM_BATCH * loaded / MANY
    assert streamed < 4 * batch, (streamed, batch)
    assert walked < 4 * batch, (walked, batch)
    assert repository.verify_chains().breaks == []


def _cli(url: str, tmp_path: Path, *args: str) -> tuple[int, str]:
    config = tmp_path / "rotator.toml"
    config.write_text(DATABASE_ONLY_CONFIG.format(url=url))
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(["--config", str(config), *args])
    return code, out.getvalue()


def test_export_jsonl_and_csv_carry_the_chain_hash(repository: SqlRepository,
                                                   migrated_url: str, tmp_path: Path) -> None:
    _fill(repository, 3)
    code, out = _cli(migrated_url, tmp_path, "audit", "export", "--format", "jsonl")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["chain_seq"] for r in rows] == [1, 2, 3]
    assert all(r["chain_hash"].startswith("sha256:") for r in rows)
    stored = repository.chain_head("app")
    assert stored is not None and rows[-1]["chain_hash"] == stored.chain_hash

    code, out = _cli(migrated_url, tmp_path, "audit", "export", "app", "--format", "csv",
                     "--since", "2026-11-01T00:00:02")
    assert code == 0
    read = list(csv.DictReader(io.StringIO(out)))
    assert [r["chain_seq"] for r in read] == ["2", "3"]
    assert read[-1]["chain_hash"] == stored.chain_hash

    # An empty export is the header alone.
    code, out = _cli(migrated_url, tmp_path, "audit", "export", "--format", "csv",
                     "--since", "2999-01-01")
    assert code == 0 and out.splitlines()[0].startswith("id,at,target")
    assert len(out.splitlines()) == 1


def test_audit_still_shows_and_its_actions_are_words_after_it(
        repository: SqlRepository, migrated_url: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    _fill(repository, 2)
    code, out = _cli(migrated_url, tmp_path, "audit", "app", "--format", "json")
    assert code == 0 and [e["chain_seq"] for e in json.loads(out)] == [1, 2]
    code, shown = _cli(migrated_url, tmp_path, "audit", "show", "app", "--format", "json")
    assert (code, shown) == (0, out)
    code, out = _cli(migrated_url, tmp_path, "audit", "--format", "csv", "--limit", "1")
    assert code == 0 and len(out.splitlines()) == 2
    code, out = _cli(migrated_url, tmp_path, "audit", "verify")
    assert (code, out.strip()) == (0, "1 target(s), 2 event(s): no breaks")
    # A target called "verify" is shown with `show`; here it is not configured.
    code, _ = _cli(migrated_url, tmp_path, "audit", "show", "verify")
    assert code == 2 and "unknown target 'verify'" in capsys.readouterr().err
