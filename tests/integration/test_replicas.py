"""Several ``rotator run`` replicas on one PostgreSQL database: each due rotation runs
exactly once, and a replica that dies mid-rotation has its work finished by another once
its lease has expired.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from rotator.core.model import Status
from tests.integration.conftest import MakeWorld
from tests.integration.daemon_process import (
    Daemon,
    crash_env,
    daemon_config,
    metric,
    wait_for,
)
from tests.integration.world import World

pytestmark = [pytest.mark.integration,
              pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)]


def _statuses(world: World) -> dict[str, list[Status]]:
    out: dict[str, list[Status]] = {name: [] for name in world.accounts}
    for rot in world.rotations():
        out[rot.target].append(rot.status)
    return out


def _all_completed_once(world: World) -> bool:
    return all(s == [Status.COMPLETED] for s in _statuses(world).values())


def test_two_replicas_rotate_fifty_due_targets_exactly_once(make_world: MakeWorld) -> None:
    names = tuple(f"t{i:02d}" for i in range(50))
    world = make_world(*names, grace="1s")
    daemons = []
    try:
        for replica in ("r1", "r2"):
            config, port = daemon_config(world, replica, workers=4)
            daemons.append(Daemon(world, config, port, name=replica))
        for daemon in daemons:
            daemon.wait_ready()
        wait_for(lambda: _all_completed_once(world), 120, "all 50 targets rotated")
        started = [sum(metric(d.metrics(), "rotator_rotations_started_total", target=n,
                              trigger="first_rotation") for n in names) for d in daemons]
        exits = [d.terminate(timeout=30) for d in daemons]
    finally:
        for daemon in daemons:
            daemon.close()
    assert [code for code, _ in exits] == [0, 0]             # no deadlock, clean exits
    assert sum(started) == 50, started                       # one start per target in all
    creates = world.emulator.state.counters().creates
    for name in names:
        assert creates[world.accounts[name].account_id] == 1, name   # one key each
        world.assert_invariants(name)
    assert _statuses(world) == {name: [Status.COMPLETED] for name in names}


def test_a_replica_killed_mid_rotation_has_its_work_finished_by_the_other(
        make_world: MakeWorld) -> None:
    names = tuple(f"k{i}" for i in range(8))
    world = make_world(*names, grace="500ms")
    slow = {'lease_ttl = "1s"': 'lease_ttl = "2s"'}
    config_a, port_a = daemon_config(world, "doomed", replace=slow)
    config_b, port_b = daemon_config(world, "survivor", replace=slow)
    # The doomed replica is SIGKILLed right after its first Vault write: it dies holding
    # that target's lease with the new key stored and the old one not yet revoked.
    doomed = Daemon(world, config_a, port_a, env=crash_env("vault_write:after"), name="doomed")
    # The survivor starts once the doomed one has a rotation of its own: started together,
    # a survivor quicker off the mark could take all eight, and nothing would kill the
    # doomed one (a loaded CI machine saw that).
    survivor: Daemon | None = None
    try:
        wait_for(lambda: doomed.proc.poll() is not None or any(
            e.get("event") == "rotation_started" for e in doomed.events()), 60,
            lambda: f"the doomed replica to start a rotation:\n{doomed.logs()[-3000:]}")
        survivor = Daemon(world, config_b, port_b, name="survivor")
        assert doomed.wait(60) == -9
        wait_for(lambda: _all_completed_once(world), 60, "every target rotated once")
        assert survivor.terminate()[0] == 0
    finally:
        doomed.close()
        if survivor is not None:
            survivor.close()
    died_at = max(datetime.fromisoformat(e["timestamp"]) for e in doomed.events())
    resumed = [e for e in survivor.events() if e.get("event") == "rotation_resumed"]
    assert resumed, "the survivor never resumed the dead replica's rotation"
    for event in resumed:
        waited = (datetime.fromisoformat(event["timestamp"]) - died_at).total_seconds()
        # The lease (2s, renewed every 2/3 s) had to lapse before the survivor could act.
        assert waited >= 1.2, waited
    for name in names:
        world.assert_invariants(name)
        old = world.accounts[name].secret
        assert world.whoami(old).status_code == 401, name     # every old key revoked
