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

from rotator.core.model import Status
from rotator.core.ports import PendingCleanup
from tests.integration.conftest import MakeWorld
from tests.integration.daemon_process import daemon_config
from tests.integration.world import World

__all__ = ["CASES", "PATHS", "boundary_daemon_config", "end_problems", "expected_status",
           "prepare"]

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

# Short leases, so a daemon stopped at a boundary loses its targets within half a second.
_SHORT_LEASE = {'lease_ttl = "1s"': 'lease_ttl = "500ms"'}


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
            repo.add_cleanup(PendingCleanup("app", account, leftover.key_id, done.rotation_id,
                                            "revoke failed (test)"), datetime.now(UTC))
        finally:
            repo.engine.dispose()
    return world, {"ROTATOR_TEST_FAIL_AT": "read_back"} if path == "restore" else {}


def boundary_daemon_config(world: World, name: str, path: str,
                           replace: dict[str, str] | None = None) -> tuple[Path, int]:
    """A daemon for ``path``: short leases; on the cleanup path it only works the queue."""
    return daemon_config(world, name, replace={**_SHORT_LEASE, **(replace or {})},
                         schedule="enabled = false" if path == "cleanup" else 'every = "30d"')


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
