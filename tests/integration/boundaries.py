"""The step boundaries the crash and pause matrices stop a daemon at, and the world of each.

Five paths reach every boundary there is: a plain rotation; one whose account is at its
key limit (a stale key is deleted first); one whose new key never authenticates (the
rollback deletes it); one whose read-back from Vault fails after the write (an injected
failure: the rollback restores Vault's previous version, then deletes the new key); and a
queued cleanup of a key a revoke could not delete.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rotator.core.model import Status, key_name
from rotator.core.ports import PendingCleanup
from rotator.core.vocabulary import AuditAction, EventKind
from tests import writes
from tests.integration.conftest import MakeWorld
from tests.integration.daemon_process import QUICK_CALLS, daemon_config
from tests.integration.world import World

__all__ = ["CASES", "PATHS", "assert_stopped_at", "boundary_daemon_config", "end_problems",
           "expected_status", "prepare"]

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

# Short leases, so a daemon stopped at a boundary loses its targets within half a second,
# and short call budgets, which a take-over waits out after a call left undecided.
_SHORT = {'lease_ttl = "1s"': 'lease_ttl = "500ms"', **QUICK_CALLS}


def prepare(make_world: MakeWorld, path: str) -> tuple[World, dict[str, str]]:
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
        assert world.cli_here("rotate", "app", "--grace", "0s")[0] == 0
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


def boundary_daemon_config(world: World, name: str, path: str,
                           replace: dict[str, str] | None = None) -> tuple[Path, int]:
    """A daemon for ``path``: short leases and calls; on the cleanup path it only works
    the queue."""
    return daemon_config(world, name, replace={**_SHORT, **(replace or {})},
                         schedule="enabled = false" if path == "cleanup" else 'every = "30d"')


def assert_stopped_at(world: World, point: str) -> None:
    """What SQL (one read), Count and Vault hold while the daemon is stopped (killed or
    frozen) is ``point``'s: and whatever the instant, the key Vault serves works.

    ``<action>:before``: the last row is the action's intent, with no outcome, and the
    effect has not happened; ``<action>:after``: the last row is its outcome, paired with
    an intent, and the effect has happened; ``step:<s>``: the rotation's saved step is s.
    """
    vault_version, served, _ = world.vault_secret("app")
    assert world.whoami(served).status_code == 200
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


def expected_status(path: str) -> Status:
    return Status.ROLLED_BACK if path in ("rollback", "restore") else Status.COMPLETED


def end_problems(world: World, path: str, old_secret: str) -> list[str]:
    """What is wrong with how the work ended: not one rotation ended as ``path`` ends,
    ``rotator verify`` not clean, the old key not gone (or Vault changed after a rollback),
    Vault's key dead, a key leaked or a side effect unpaired. Each check runs whatever the
    others found."""
    expected = expected_status(path)
    problems = []
    statuses = [r.status.value for r in world.rotations("app")]
    if statuses != [expected.value]:
        problems.append(f"rotations ended {statuses}, not [{expected.value!r}]")
    code, report = world.verify()
    if code != 0 or "no findings" not in report:
        problems.append(f"rotator verify (exit {code}):\n{report}")
    if expected is Status.COMPLETED and world.whoami(old_secret).status_code != 401:
        problems.append("the old key still works")
    if expected is not Status.COMPLETED and world.vault_secret("app")[1] != old_secret:
        problems.append("Vault does not serve the old key after a rollback")
    try:
        world.assert_invariants("app")
    except AssertionError as exc:
        problems.append(f"invariants: {exc}")
    return problems
