"""Every exit code the README documents, through the real command line (``python -m
rotator`` in a subprocess), on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from tests.integration.conftest import MakeWorld
from tests.integration.test_pending_cleanup import _rotate_with_failing_deletes

pytestmark = pytest.mark.integration


def test_each_documented_exit_code(make_world: MakeWorld) -> None:
    w = make_world("app", grace="2s")

    done = w.cli("rotate", "app", "--grace", "0s")
    assert done.returncode == 0, done.stderr                                   # 0 done

    unknown = w.cli("rotate", "nosuch")
    assert unknown.returncode == 2 and "nosuch" in unknown.stderr, unknown.stderr  # 2 usage
    assert w.cli("rotate").returncode == 2

    # 3: the target's lease held by another process (tests/integration/test_join.py holds
    # it with a live, paused rotate); the message names the holder.
    repo = w.repository()
    try:
        assert repo.acquire_lease("app", "elsewhere:4242:cafe", 60, datetime.now(UTC))
        held = w.cli("rotate", "app")
        repo.release_lease("app", "elsewhere:4242:cafe")
    finally:
        repo.engine.dispose()
    assert held.returncode == 3, (held.stdout, held.stderr)
    assert re.search(r"app: lease_held, rotation -, \S+: lease held by elsewhere:4242:cafe until ",
                     held.stdout), held.stdout

    pending = _rotate_with_failing_deletes(w)                  # 4: the old key still lives
    assert pending.returncode == 4, (pending.stdout, pending.stderr)
    assert w.cli("status").returncode == 4

    # 1: a rotation that fails (the key in Vault no longer authenticates: plan refuses).
    _, secret, _ = w.vault_secret("app")
    key_id = w.whoami(secret).json()["result"]["key_id"]
    w.emulator.state.delete_key(w.accounts["app"].account_id, key_id)
    failed = w.cli("rotate", "app", "--grace", "0s")
    assert failed.returncode == 1, (failed.stdout, failed.stderr)
    assert re.search(r"app: failed, rotation rot_", failed.stdout), failed.stdout

    # 3: the database schema behind this rotator.
    w.config_path.write_text(w.config_path.read_text().replace(
        w.db_url, f"sqlite:///{w.config_path.parent}/empty.db"))
    behind = w.cli("rotate", "app")
    assert behind.returncode == 3 and "rotator db upgrade" in behind.stderr, behind.stderr
