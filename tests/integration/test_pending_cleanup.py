"""A revoke that keeps failing (the provider answers 5xx) ends the rotation completed, but
``completed_pending_cleanup``: shown by ``rotate``, ``status`` and ``audit``, exit 4; and
the next run's cleanup pass deletes the old key and settles it.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess

import pytest
from sqlalchemy import text

from rotator.core.vocabulary import AuditAction, AuditResult
from tests.integration.conftest import MakeWorld
from tests.integration.world import World

pytestmark = pytest.mark.integration


def _rotate_with_failing_deletes(w: World) -> subprocess.CompletedProcess[str]:
    """``rotate app``; once its new key is in Vault (its grace running), every provider
    call answers 5xx, so the old key's deletion fails whatever it retries."""
    _, old_secret, _ = w.vault_secret("app")
    proc = subprocess.Popen(w.cli_args("rotate", "app"), env=w.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        w.wait_for_new_secret("app", old_secret)
        w.emulator.settings = dataclasses.replace(w.emulator.settings, error_rate=1.0)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        w.emulator.settings = dataclasses.replace(w.emulator.settings, error_rate=0.0)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _pending_by_docs_query(w: World) -> list[tuple[str, str]]:
    """docs/audit.md's query for the rotations completed with the old key alive."""
    repo = w.repository()
    try:
        with repo.engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT rotation_id, key_id FROM rotation_events WHERE kind = 'note' AND "
                "action = 'completed' AND result = 'completed_pending_cleanup' ORDER BY id"))
            return [(r.rotation_id, r.key_id) for r in rows]
    finally:
        repo.engine.dispose()


def test_a_revoke_that_keeps_failing_is_completed_pending_cleanup(make_world: MakeWorld
                                                                   ) -> None:
    w = make_world("app", grace="2s")
    _, old_secret, _ = w.vault_secret("app")
    old_key = w.whoami(old_secret).json()["result"]["key_id"]

    rotating = _rotate_with_failing_deletes(w)
    assert rotating.returncode == 4, (rotating.stdout, rotating.stderr)
    [rot] = w.rotations("app")
    assert rot.status.value == "completed"           # the status CHECK keeps its 4 values
    assert re.search(rf"app: completed_pending_cleanup, rotation {rot.rotation_id}, \S+: old key "
                     rf"{old_key} queued for cleanup", rotating.stdout), rotating.stdout
    assert w.whoami(old_secret).status_code == 200   # still live, as reported

    status = w.cli_in_process("status")
    assert status.returncode == 4, (status.stdout, status.stderr)
    [row] = [line for line in status.stdout.splitlines() if line.startswith("app ")]
    assert re.search(rf"app\s+{rot.new_key_id}\s+\S+\s+{old_key} \(its deletion failed: "
                     rf"queued for cleanup\)\s+-\s+completed_pending_cleanup ", row), row

    audit = json.loads(w.cli_in_process("audit", "app", "--format", "json").stdout)
    [ending] = [e for e in audit if e["action"] == AuditAction.COMPLETED]
    assert ending["result"] == AuditResult.COMPLETED_PENDING_CLEANUP
    table = w.cli_in_process("audit", "app").stdout
    assert re.search(r"note\s+completed\s+completed_pending_cleanup", table), table
    assert _pending_by_docs_query(w) == [(rot.rotation_id, rot.new_key_id)]

    # The provider answers again: the next run's cleanup pass deletes the old key first.
    again = w.cli_in_process("rotate", "app", "--grace", "0s")
    assert again.returncode == 0, again.stderr
    assert w.whoami(old_secret).status_code == 401
    assert w.cli_in_process("status").returncode == 0
    assert w.settled()
    w.assert_invariants("app")
    assert w.verify()[0] == 0
