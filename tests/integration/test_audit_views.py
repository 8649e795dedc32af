"""The auditor views (migration 0005) after real rotations, and every SQL block of
docs/audit.md, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from rotator.app.operations import whoami_actor
from rotator.core.model import FailureCode, Status, Step
from rotator.emulator import EmulatorSettings
from tests.integration.audit_doc import query_rows, sql_blocks
from tests.integration.conftest import MakeWorld
from tests.integration.world import World

pytestmark = pytest.mark.integration

REASON = "INC-311: key shown in a support ticket"


def _audited_world(make_world: MakeWorld) -> World:
    """Two manual rotations of "app" (the first with a reason), one rolled back of "bad"."""
    world = make_world("app", "bad", grace="200ms", probe_timeout="600ms")
    first = world.cli_in_process("rotate", "app", "--reason", REASON)
    assert first.returncode == 0, first.stderr
    second = world.cli_in_process("rotate", "app")
    assert second.returncode == 0, second.stderr
    world.emulator.settings = EmulatorSettings(propagation_delay=30)  # never authenticates
    failed = world.cli_in_process("rotate", "bad")
    assert failed.returncode == 1 and "rolled_back" in failed.stdout, failed.stdout
    world.emulator.settings = EmulatorSettings()
    return world


def test_each_view_answers_its_question_after_real_rotations(make_world: MakeWorld) -> None:
    world = _audited_world(make_world)
    one, two = world.rotations("app")
    (bad,) = world.rotations("bad")
    assert (one.status, two.status, bad.status) == (Status.COMPLETED, Status.COMPLETED,
                                                   Status.ROLLED_BACK)
    (live,) = world.live_key_ids("app")
    assert two.new_key_id == live and one.new_key_id == two.old_key_id

    # Which key was live from when to when: the one found in place, then one per rotation.
    keys = query_rows(world, "SELECT key_id, installed_by, live_from, live_until, replaced_by,"
                        " revoked_at FROM audit_key_lifetimes WHERE target = 'app'"
                        " ORDER BY live_from IS NOT NULL, live_from")
    assert [(k.key_id, k.installed_by, k.replaced_by) for k in keys] == [
        (one.old_key_id, None, one.rotation_id),
        (one.new_key_id, one.rotation_id, two.rotation_id),
        (two.new_key_id, two.rotation_id, None)]
    assert keys[0].live_from is None and keys[2].live_until is None
    assert keys[0].live_until == keys[1].live_from and keys[1].live_until == keys[2].live_from
    assert keys[1].live_from < keys[2].live_from
    assert [k.revoked_at is not None for k in keys] == [True, True, False]
    assert keys[1].live_until < keys[1].revoked_at     # revoked after its grace window
    assert query_rows(world, "SELECT key_id FROM audit_key_lifetimes WHERE target = 'bad'") == []

    # Which targets hold a key older than policy: only rotated ones have an age.
    current = query_rows(world, "SELECT target, key_id, age_seconds FROM audit_current_keys")
    assert [(c.target, c.key_id) for c in current] == [("app", live)]
    assert 0 <= float(current[0].age_seconds) < 120
    assert query_rows(world, "SELECT target FROM audit_current_keys WHERE age_seconds > 60") == []

    # Which rotations failed or rolled back, and why.
    (failed,) = query_rows(world, "SELECT * FROM audit_failed_rotations")
    assert (failed.rotation_id, failed.target, failed.status, failed.trigger) == (
        bad.rotation_id, "bad", "rolled_back", "manual")
    assert bad.failure is not None
    assert (failed.failure_step, failed.failure_code) == (
        Step.VERIFY.value, FailureCode.NEVER_AUTHENTICATED.value)
    assert failed.failure_message == bad.failure.message and failed.reason == bad.reason
    assert failed.new_key_id == bad.new_key_id and failed.new_key_id is not None

    # Which rotations were manual, who ran them, and why.
    manual = query_rows(world, "SELECT rotation_id, actor, reason, status FROM"
                          " audit_manual_rotations ORDER BY started_at")
    assert [(m.rotation_id, m.actor, m.reason, m.status) for m in manual] == [
        (one.rotation_id, whoami_actor(), REASON, "completed"),
        (two.rotation_id, whoami_actor(), None, "completed"),
        (bad.rotation_id, whoami_actor(), None, "rolled_back")]
    # The reason is in the append-only trail as well.
    repo = world.repository()
    try:
        started = [e.detail for e in repo.events("app")
                   if e.rotation_id == one.rotation_id and e.action == "started"]
    finally:
        repo.engine.dispose()
    assert started == [f"manual rotation by {whoami_actor()}; grace 0.2s; reason: {REASON}"]




def test_every_sql_block_of_the_audit_doc_runs(make_world: MakeWorld) -> None:
    blocks = sql_blocks()
    assert len(blocks) >= 4, "one query per question at least"
    world = _audited_world(make_world)
    empty = []
    # The stray-deletion query needs a `reconcile --fix` run: test_reconcile_cli.py runs it.
    for block in (b for b in blocks if "delete_stray" not in b):
        # A real target's name and dates that hold its rotations, for the doc's examples.
        query = block.replace("'billing-export'", "'app'").replace("'2026-11-01'",
                                                                      "'2000-01-01'")
        if not query_rows(world, query):
            empty.append(block)
    # Every one finds rows but the age query (these keys are seconds old) and the one for
    # an old key left queued (every delete here succeeded; test_pending_cleanup.py runs it
    # where one did not).
    assert len(empty) == 2, empty
    assert "age_seconds > 90 * 86400" in empty[0] or "age_seconds > 90 * 86400" in empty[1]
    assert any("completed_pending_cleanup" in block for block in empty), empty
