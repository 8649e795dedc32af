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

__all__ = ["CASES", "PATHS", "assert_ended_as_expected", "boundary_daemon_config",
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


def assert_ended_as_expected(world: World, path: str, old_secret: str) -> None:
    """One rotation, ended as ``path`` ends; ``rotator verify`` clean; no key leaked."""
    expected = expected_status(path)
    assert [r.status for r in world.rotations("app")] == [expected]
    code, report = world.verify()
    assert code == 0, report
    assert "no findings" in report
    if expected is Status.COMPLETED:
        assert world.whoami(old_secret).status_code == 401   # the old key went, once
    else:
        assert world.vault_secret("app")[1] == old_secret     # Vault never changed
    world.assert_invariants("app")
