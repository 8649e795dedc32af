"""The crash matrix: the daemon is SIGKILLed at every step boundary, before and after each
side effect, restarted, and the invariant checker (``rotator verify``) must find nothing.

The boundaries and the five paths that reach them are ``tests.integration.boundaries``'s
(shared with the pause matrix). Each case runs on SQLite and PostgreSQL.
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


@pytest.mark.parametrize(("path", "point"), CASES)
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
