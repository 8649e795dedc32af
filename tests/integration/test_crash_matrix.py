"""The crash matrix: the daemon is SIGKILLed at every step boundary, before and after each
side effect, restarted, and the invariant checker (``rotator verify``) must find nothing.

The boundaries and the five paths that reach them are ``tests.integration.boundaries``'s
(shared with the pause matrix). Each case runs on SQLite and PostgreSQL, with Count's
adapter; the generic ``type = "http"`` provider on the emulator's alt layout runs the
boundary after each of its calls that changes keys, and one before (``HTTP_POINTS``):
all of them would add some minutes to the suite, and the other boundaries are the
engine's, not the provider's.
"""

from __future__ import annotations

import pytest

from tests.integration.boundaries import (
    CASES,
    assert_stopped_at,
    boundary_daemon_config,
    end_problems,
    prepare,
)
from tests.integration.conftest import MakeWorld
from tests.integration.daemon_process import Daemon, crash_env, wait_for

pytestmark = pytest.mark.integration

# Right after each call that changes keys at the provider, its answer lost: the create,
# the revoke, the stale key's delete at the key limit, the rollback's delete of a key that
# never worked, the cleanup queue's delete; and a revoke about to go. Each is read back
# through the adapter's list_keys on the restart, which is where the adapters differ.
HTTP_POINTS = {("happy", "create_key:after"), ("happy", "revoke_key:before"),
               ("happy", "revoke_key:after"), ("full", "delete_key:after"),
               ("rollback", "delete_key:after"), ("cleanup", "cleanup_key:after")}
MATRIX = [pytest.param("count", *case.values, id=case.id) for case in CASES] + [
    pytest.param("http", *case.values, id=f"http-{case.id}") for case in CASES
    if tuple(case.values) in HTTP_POINTS]


@pytest.mark.parametrize(("provider_kind", "path", "point"), MATRIX)
def test_sigkill_at_every_boundary_then_restart_leaves_no_violation(
        make_world: MakeWorld, path: str, point: str) -> None:
    world, extra_env = prepare(make_world, path)
    old_secret = world.accounts["app"].secret
    config, port = boundary_daemon_config(world, "d", path)
    first = Daemon(world, config, port, env={**crash_env(point), **extra_env}, name="first")
    try:
        assert first.wait(60) == -9, f"never reached {point}:\n{first.logs()[-3000:]}"
    finally:
        first.close()
    assert_stopped_at(world, point)
    second = Daemon(world, config, port, name="second")
    try:
        second.wait_ready()
        wait_for(lambda: bool(world.rotations()) and world.settled(), 30,
                 f"the work interrupted at {point} to finish")
        assert second.terminate()[0] == 0
    finally:
        second.close()
    problems = end_problems(world, path, old_secret)
    assert not problems, "\n".join(problems)
