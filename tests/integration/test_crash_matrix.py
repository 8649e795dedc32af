"""The crash matrix: the daemon is SIGKILLed at every step boundary, before and after each
side effect, restarted, and the invariant checker (``rotator verify``) must find nothing.

Three paths reach every boundary there is: a plain rotation; one whose account is at its
key limit (a stale key is deleted first); and one whose new key never authenticates (the
rollback deletes it). Each case runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import dataclasses

import pytest

from rotator.core.model import Status
from tests.integration.conftest import MakeWorld
from tests.integration.daemon_process import Daemon, crash_env, daemon_config, wait_for
from tests.integration.world import World

pytestmark = pytest.mark.integration

HAPPY = ["started", "create_key:before", "create_key:after", "step:verify", "step:store",
         "vault_write:before", "vault_write:after", "step:grace", "revoke_key:before",
         "revoke_key:after", "step:done"]
FULL = ["delete_key:before", "delete_key:after"]          # the stale key, at the key limit
ROLLBACK = ["step:rollback", "delete_key:before", "delete_key:after"]   # the unusable new key

CASES = ([pytest.param("happy", p, id=f"happy-{p}") for p in HAPPY]
         + [pytest.param("full", p, id=f"full-{p}") for p in FULL]
         + [pytest.param("rollback", p, id=f"rollback-{p}") for p in ROLLBACK])


def _rotations(world: World) -> list[Status]:
    repo = world.repository()
    try:
        return [r.status for r in repo.rotations("app")]
    finally:
        repo.engine.dispose()


def _prepare(make_world: MakeWorld, path: str) -> World:
    world = make_world("app", grace="300ms", probe_timeout="500ms")
    if path == "full":
        world.emulator.state.create_key(world.accounts["app"].account_id, "forgotten")
    if path == "rollback":
        world.emulator.settings = dataclasses.replace(world.emulator.settings,
                                                      propagation_delay=3600.0)
    return world


@pytest.mark.parametrize(("path", "point"), CASES)
def test_sigkill_at_every_boundary_then_restart_leaves_no_violation(
        make_world: MakeWorld, path: str, point: str) -> None:
    world = _prepare(make_world, path)
    old_secret = world.accounts["app"].secret
    config, port = daemon_config(world, "d", replace={'lease_ttl = "1s"': 'lease_ttl = "500ms"'})
    first = Daemon(world, config, port, env=crash_env(point), name="first")
    try:
        assert first.wait(60) == -9, f"never reached {point}:\n{first.logs()[-3000:]}"
    finally:
        first.close()
    # Whatever the instant, the key consumers read from Vault still works.
    _, served, _ = world.vault_secret("app")
    assert world.whoami(served).status_code == 200
    second = Daemon(world, config, port, name="second")
    try:
        second.wait_ready()
        wait_for(lambda: Status.RUNNING not in _rotations(world) and _rotations(world) != [],
                 30, f"the rotation interrupted at {point} to finish")
        assert second.terminate()[0] == 0
    finally:
        second.close()
    expected = Status.ROLLED_BACK if path == "rollback" else Status.COMPLETED
    assert _rotations(world) == [expected]
    verify = world.cli("verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr[-2000:]
    assert "no findings" in verify.stdout
    if expected is Status.COMPLETED:
        assert world.whoami(old_secret).status_code == 401   # the old key went, once
    else:
        assert world.vault_secret("app")[1] == old_secret     # Vault never changed
    world.assert_invariants("app")
