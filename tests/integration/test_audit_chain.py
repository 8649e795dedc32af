"""The audit chain after real rotations: ``rotator audit verify`` finds every tampering.

Each tampering is what finding 5 showed the runtime role could do, the append-only
triggers set aside first (the table's owner may): an edited row, a deleted row, a forged
INSERT, two rows swapped; and, with an HMAC key, a chain recomputed without the key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest
from sqlalchemy import Connection, select, text

from rotator.adapters.sql.backend import is_sqlite
from rotator.adapters.sql.schema import make_engine
from rotator.adapters.sql.tables import rotation_events
from rotator.core.audit_chain import chain_hash
from tests.integration.conftest import MakeWorld
from tests.integration.world import World

pytestmark = pytest.mark.integration

AUDIT_KEY = "audit-chain-key-for-tests-0123456789"
_CONTENT = ("rotation_id", "target", "step", "kind", "action", "result", "key_id",
            "fingerprint", "vault_version", "request_id", "op_id", "detail", "at",
            "lease_generation", "chain_seq", "chain_hash")


def _rotated(make_world: MakeWorld, rotations: int = 2) -> World:
    w = make_world("app")
    for _ in range(rotations):
        code, out = w.cli_here("rotate", "app")
        assert code == 0, out
    return w


def _tamper(url: str, change: Callable[[Connection], None]) -> None:
    """Run ``change`` with the append-only triggers set aside, as the table's owner can."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            if is_sqlite(conn):
                conn.execute(text("DROP TRIGGER IF EXISTS rotation_events_no_update"))
                conn.execute(text("DROP TRIGGER IF EXISTS rotation_events_no_delete"))
            else:
                conn.execute(text("ALTER TABLE rotation_events DISABLE TRIGGER USER"))
            change(conn)
    finally:
        engine.dispose()


def _ids(url: str) -> list[int]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(rotation_events.c.id)
                                     .order_by(rotation_events.c.id)).scalars())
    finally:
        engine.dispose()


def _edit(ids: list[int]) -> tuple[Callable[[Connection], None], int, str]:
    def change(conn: Connection) -> None:
        conn.execute(text("UPDATE rotation_events SET detail = 'nothing to see' WHERE id = :id"),
                     {"id": ids[2]})
    return change, ids[2], "edited"


def _delete(ids: list[int]) -> tuple[Callable[[Connection], None], int, str]:
    def change(conn: Connection) -> None:
        conn.execute(text("DELETE FROM rotation_events WHERE id = :id"), {"id": ids[2]})
    return change, ids[3], "missing"


def _forge(ids: list[int]) -> tuple[Callable[[Connection], None], int, str]:
    def change(conn: Connection) -> None:
        # The columns rotator wrote before the chain: what a forger who knows the schema
        # of finding 5 inserts.
        conn.execute(text(
            "INSERT INTO rotation_events (rotation_id, target, step, kind, action, result,"
            " at, lease_generation) VALUES ('rot_forged', 'app', 'done', 'outcome',"
            " 'revoke_key', 'ok', CURRENT_TIMESTAMP, 1)"))
    return change, ids[-1] + 1, "inserted"


def _swap(ids: list[int]) -> tuple[Callable[[Connection], None], int, str]:
    def change(conn: Connection) -> None:
        # Every column but the id: the two events change places in the trail.
        rows = {row["id"]: dict(row) for row in conn.execute(
            select(rotation_events).where(rotation_events.c.id.in_(ids[2:4]))).mappings()}
        # Out of the unique index's way first, as a swap in place must be.
        conn.execute(rotation_events.update().where(rotation_events.c.id.in_(ids[2:4]))
                     .values(chain_seq=None))
        for here, there in ((ids[2], ids[3]), (ids[3], ids[2])):
            conn.execute(rotation_events.update().where(rotation_events.c.id == here)
                         .values({c: rows[there][c] for c in _CONTENT}))
    return change, ids[2], "reordered"


@pytest.mark.parametrize("tampering", [_edit, _delete, _forge, _swap],
                         ids=["edited", "deleted", "inserted", "reordered"])
def test_audit_verify_names_the_first_broken_link(
        make_world: MakeWorld,
        tampering: Callable[[list[int]], tuple[Callable[[Connection], None], int, str]],
) -> None:
    w = _rotated(make_world)
    code, out = w.cli_here("audit", "verify")
    assert (code, out.strip().rsplit(": ", 1)[-1]) == (0, "no breaks"), out
    change, broken_id, kind = tampering(_ids(w.db_url))
    _tamper(w.db_url, change)

    code, out = w.cli_here("audit", "verify")
    assert code == 1, out
    assert re.search(rf"^app\s+{broken_id}\s+{kind}\s", out, re.MULTILINE), out
    assert "1 broken chain(s)" in out
    # One target asked by name: the same break.
    assert w.cli_here("audit", "verify", "app")[0] == 1
    # `rotator verify` reports it too, among its findings.
    code, out = w.verify()
    assert code == 1 and "audit_chain" in out and str(broken_id) in out, out


def _started_actors(w: World) -> list[str | None]:
    code, out = w.cli_here("audit", "-o", "json")
    assert code == 0, out
    return [e["actor"] for e in json.loads(out) if e["action"] == "started"]


def test_the_actor_is_in_the_chained_started_event_not_only_in_the_rotations_row(
        make_world: MakeWorld) -> None:
    w = _rotated(make_world, rotations=1)
    [rotation] = w.rotations("app")
    assert _started_actors(w) == [rotation.actor]

    def rewrite_the_row(conn: Connection) -> None:     # the owner's update, trigger aside
        if is_sqlite(conn):
            conn.execute(text("DROP TRIGGER IF EXISTS rotations_finished_final"))
        else:
            conn.execute(text("ALTER TABLE rotations DISABLE TRIGGER USER"))
        conn.execute(text("UPDATE rotations SET actor = 'someone-else'"))

    _tamper(w.db_url, rewrite_the_row)
    assert [r.actor for r in w.rotations("app")] == ["someone-else"]
    assert _started_actors(w) == [rotation.actor]       # the trail still says who
    assert w.cli_here("audit", "verify")[0] == 0

    started_id = _ids(w.db_url)[0]
    _tamper(w.db_url, lambda conn: conn.execute(text(
        "UPDATE rotation_events SET detail = REPLACE(detail, :actor, 'someone-else')"
        " WHERE id = :id"), {"actor": rotation.actor, "id": started_id}))
    assert _started_actors(w) == ["someone-else"]
    code, out = w.cli_here("audit", "verify")           # ... and a rewrite there shows
    assert code == 1 and re.search(rf"^app\s+{started_id}\s+edited\s", out, re.MULTILINE), out


def _keyed(make_world: MakeWorld, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setenv("IT_AUDIT_KEY", AUDIT_KEY)
    w = make_world("app")
    with w.config_path.open("a") as config:
        config.write('\n[audit]\nchain_key_env = "IT_AUDIT_KEY"\n')
    for _ in range(2):
        code, out = w.cli_here("rotate", "app")
        assert code == 0, out
    return w


def _recompute(conn: Connection, key: bytes | None) -> None:
    """Rewrite every hash of the chain of "app" in order, with ``key`` (or none)."""
    rows = conn.execute(select(rotation_events).where(rotation_events.c.target == "app")
                        .order_by(rotation_events.c.id)).mappings().all()
    previous = ""
    for row in rows:
        previous = chain_hash(row, row["chain_seq"], previous, key)
        conn.execute(rotation_events.update().where(rotation_events.c.id == row["id"])
                     .values(chain_hash=previous))


def test_a_keyed_chain_recomputed_without_the_key_is_detected(
        make_world: MakeWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    w = _keyed(make_world, monkeypatch)
    code, out = w.cli_here("audit", "verify")
    assert code == 0 and out.strip().endswith("no breaks"), out
    engine = make_engine(w.db_url)
    try:
        with engine.connect() as conn:
            hashes = list(conn.execute(select(rotation_events.c.chain_hash)).scalars())
    finally:
        engine.dispose()
    assert hashes and all(h.startswith("hmac-sha256:") for h in hashes)

    # An edit, then the whole chain rehashed as anyone can: sha256, no key.
    def forge(conn: Connection) -> None:
        conn.execute(text("UPDATE rotation_events SET detail = 'forged'"))
        _recompute(conn, None)
    _tamper(w.db_url, forge)
    code, out = w.cli_here("audit", "verify")
    assert code == 1 and re.search(r"^app\s+\d+\s+unkeyed\s", out, re.MULTILINE), out

    # Rehashed with a guessed key: every hash is keyed, none verifies.
    _tamper(w.db_url, lambda conn: _recompute(conn, b"a guess"))
    code, out = w.cli_here("audit", "verify")
    first = _ids(w.db_url)[0]
    assert code == 1 and re.search(rf"^app\s+{first}\s+edited\s", out, re.MULTILINE), out
    assert AUDIT_KEY not in out


def test_a_keyed_chain_needs_the_key_to_be_verified(
        make_world: MakeWorld, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    w = _keyed(make_world, monkeypatch)
    text_ = w.config_path.read_text()
    w.config_path.write_text(text_.replace('\n[audit]\nchain_key_env = "IT_AUDIT_KEY"\n', ""))
    code, _ = w.cli_here("audit", "verify")
    assert code == 2
    err = capsys.readouterr().err
    assert "is keyed" in err and "chain_key_env" in err and AUDIT_KEY not in err


def test_the_daemon_logs_each_chain_head_after_a_rotation(make_world: MakeWorld) -> None:
    w = make_world("app")
    run = w.cli("run", "--once", "--rotate", "app")
    assert run.returncode == 0, run.stderr
    logged = [json.loads(line) for line in (run.stdout + run.stderr).splitlines()
              if '"audit_chain_head"' in line]
    assert logged, run.stderr
    repo = w.repository()
    try:
        repo_head = repo.chain_head("app")
    finally:
        repo.engine.dispose()
    assert repo_head is not None
    last = logged[-1]
    assert (last["target"], last["event_id"], last["chain_seq"], last["chain_hash"]) == (
        "app", repo_head.id, repo_head.chain_seq, repo_head.chain_hash)
    assert last["chain_hash"].startswith("sha256:")
