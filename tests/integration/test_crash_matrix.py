"""The crash matrix: the daemon is SIGKILLed at every step boundary, before and after each
side effect, restarted, and the invariant checker (``rotator verify``) must find nothing.

Five paths reach every boundary there is: a plain rotation; one whose account is at its
key limit (a stale key is deleted first); one whose new key never authenticates (the
rollback deletes it); one whose read-back from Vault fails after the write (an injected
failure: the rollback restores Vault's previous version, then deletes the new key); and a
queued cleanup of a key a revoke could not delete. Each case runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from rotator.core.model import Status, key_name
from rotator.core.ports import PendingCleanup
from rotator.core.vocabulary import AuditAction, EventKind
from tests import writes
from tests.integration.conftest import MakeWorld
from tests.integration.daemon_process import (
    QUICK_CALLS,
    Daemon,
    crash_env,
    daemon_config,
    wait_for,
)
from tests.integration.world import World

pytestmark = pytest.mark.integration

HAPPY = ["started", "step:create", "create_key:before", "create_key:after", "step:verify",
         "step:store", "vault_write:before", "vault_write:after", "step:grace", "step:revoke",
         "revoke_key:before", "revoke_key:after", "step:done"]
FULL = ["delete_key:before", "delete_key:after"]          # the stale key, at the key limit
ROLLBACK = ["step:rollback", "delete_key:before", "delete_key:after"]   # the unusable new key
RESTORE = ["vault_restore:before", "vault_restore:after"]       # Vault back to the old key
CLEANUP = ["cleanup_key:before", "cleanup_key:after"]           # a queued key, deleted later

PATHS = {"happy": HAPPY, "full": FULL, "rollback": ROLLBACK, "restore": RESTORE,
         "cleanup": CLEANUP}
CASES = [pytest.param(path, point, id=f"{path}-{point}")
         for path, points in PATHS.items() for point in points]


def _prepare(make_world: MakeWorld, path: str) -> tuple[World, dict[str, str]]:
    """The world for ``path``, and the extra environment of the first daemon."""
    world = make_world("app", grace="300ms", probe_timeout="500ms")
    account = world.accounts["app"].account_id
    if path == "full":
        world.emulator.state.create_key(account, "forgotten")
    if path == "rollback":
        world.emulator.settings = dataclasses.replace(world.emulator.settings,
                                                      propagation_delay=3600.0)
    if path == "cleanup":
        # A finished rotation whose revoke could not delete a key: it sits in the queue.
        assert world.cli("rotate", "app", "--grace", "0s").returncode == 0
        leftover = world.emulator.state.create_key(account, "revoke-failed")
        repo = world.repository()
        try:
            (done,) = repo.rotations("app")
            writes.add_cleanup(repo, PendingCleanup("app", account, leftover.key_id,
                                                    done.rotation_id, "revoke failed (test)"),
                               datetime.now(UTC))
        finally:
            repo.engine.dispose()
    return world, {"ROTATOR_TEST_FAIL_AT": "read_back"} if path == "restore" else {}


def _assert_killed_at(world: World, point: str, vault_version: int) -> None:
    """What SQL (one read), Count and Vault hold at the instant of the kill is ``point``'s.

    ``<action>:before``: the last row is the action's intent, with no outcome, and the
    effect has not happened; ``<action>:after``: the last row is its outcome, paired with
    an intent, and the effect has happened; ``step:<s>``: the rotation's saved step is s.
    """
    repo = world.repository()
    try:
        events, rotations = repo.events(target="app"), repo.rotations("app")
    finally:
        repo.engine.dispose()
    *_, rot = rotations
    where, _, moment = point.partition(":")
    if where == "started":
        assert (rot.step.value, events[-1].action) == ("plan", AuditAction.STARTED)
        return
    if where == "step":
        assert rot.step.value == moment, (point, rot)
        return
    last = events[-1]
    intents = [e for e in events if e.kind is EventKind.INTENT and e.op_id == last.op_id]
    outcomes = [e for e in events if e.kind is EventKind.OUTCOME and e.op_id == last.op_id]
    done = moment == "after"
    assert last.action == where and len(intents) == 1, (point, last)
    assert last.kind is (EventKind.OUTCOME if done else EventKind.INTENT), (point, last)
    assert len(outcomes) == done, (point, outcomes)
    live = world.live_key_ids("app")
    if where == AuditAction.CREATE_KEY:
        names = {k.name for k in world.emulator.state.keys(world.accounts["app"].account_id)}
        assert (key_name("app", rot.rotation_id) in names) == done, point
        assert not done or last.key_id in live, point
    elif where in (AuditAction.VAULT_WRITE, AuditAction.VAULT_RESTORE):
        assert last.vault_version == vault_version, (point, last, vault_version)
    else:   # a deletion: delete_key, revoke_key, cleanup_key
        assert (last.key_id in live) != done, (point, last, live)


@pytest.mark.parametrize(("path", "point"), CASES)
def test_sigkill_at_every_boundary_then_restart_leaves_no_violation(
        make_world: MakeWorld, path: str, point: str) -> None:
    world, extra_env = _prepare(make_world, path)
    old_secret = world.accounts["app"].secret
    config, port = daemon_config(world, "d",
                                 replace={'lease_ttl = "1s"': 'lease_ttl = "500ms"', **QUICK_CALLS},
                                 schedule="enabled = false" if path == "cleanup"
                                 else 'every = "30d"')
    first = Daemon(world, config, port, env={**crash_env(point), **extra_env}, name="first")
    try:
        assert first.wait(60) == -9, f"never reached {point}:\n{first.logs()[-3000:]}"
    finally:
        first.close()
    # Whatever the instant, the key consumers read from Vault still works.
    version, served, _ = world.vault_secret("app")
    assert world.whoami(served).status_code == 200
    _assert_killed_at(world, point, version)
    second = Daemon(world, config, port, name="second")
    try:
        second.wait_ready()
        wait_for(lambda: bool(world.rotations()) and world.settled(), 30,
                 f"the work interrupted at {point} to finish")
        assert second.terminate()[0] == 0
    finally:
        second.close()
    expected = Status.ROLLED_BACK if path in ("rollback", "restore") else Status.COMPLETED
    assert [r.status for r in world.rotations("app")] == [expected]
    verify = world.cli("verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr[-2000:]
    assert "no findings" in verify.stdout
    if expected is Status.COMPLETED:
        assert world.whoami(old_secret).status_code == 401   # the old key went, once
    else:
        assert world.vault_secret("app")[1] == old_secret     # Vault never changed
    world.assert_invariants("app")
