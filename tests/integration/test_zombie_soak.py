"""Zombie soak: two replicas on PostgreSQL rotate eight targets every two seconds while one
of them is frozen (SIGSTOP) for longer than its lease, then thawed (SIGCONT), again and
again: each time the other replica takes its targets over, and the thawed one wakes up in
the middle of whatever step it was in. Afterwards every rotation has one ending, Vault's
key of every target works, no key leaked and ``rotator verify`` finds nothing.

Seeded like the chaos soak: the seed is printed, ``ROTATOR_ZOMBIE_SEED=N`` replays the
freezes; CI runs a short soak, ``ROTATOR_ZOMBIE_SECONDS=90 pytest -m chaos -s -k zombie``
a long one (the issue's zombie writes showed with twelve freezes in 90 seconds).
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from datetime import UTC, datetime

import pytest

from rotator.core.model import Status
from tests.integration.conftest import MakeWorld
from tests.integration.daemon_process import Daemon, daemon_config, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(900),
              pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)]

TARGETS = tuple(f"z{i}" for i in range(8))
LEASE_TTL = 1.0    # the world's lease_ttl ("1s")


def _count(daemon: Daemon, event: str) -> int:
    return sum(e.get("event") == event for e in daemon.events())


def _take_overs(steady: Daemon, windows: list[tuple[datetime, datetime]]) -> int:
    """Rotations the steady replica resumed while the other one was frozen."""
    return sum(any(start <= datetime.fromisoformat(e["timestamp"]) <= end
                   for start, end in windows)
               for e in steady.events() if e.get("event") == "rotation_resumed")


def test_zombie_soak(make_world: MakeWorld) -> None:
    seed = int(os.environ.get("ROTATOR_ZOMBIE_SEED") or random.SystemRandom().randrange(2**31))
    duration = float(os.environ.get("ROTATOR_ZOMBIE_SECONDS", "15"))
    print(f"\nzombie seed {seed}, {duration:g}s (replay: ROTATOR_ZOMBIE_SEED={seed})")
    rng = random.Random(seed)
    world = make_world(*TARGETS, grace="500ms", probe_timeout="3s")
    zombie = Daemon(world, *daemon_config(world, "zombie", schedule='every = "2s"'),
                    name="zombie")
    steady = Daemon(world, *daemon_config(world, "steady", schedule='every = "2s"'),
                    name="steady")
    final: Daemon | None = None
    freezes: list[tuple[datetime, datetime]] = []
    problems: list[str] = []
    try:
        zombie.wait_ready()
        steady.wait_ready()
        end = time.monotonic() + duration
        while time.monotonic() < end:
            time.sleep(rng.uniform(0.3, 1.5))          # let it take targets, mid-step
            frozen_for = rng.uniform(1.3, 2.5) * LEASE_TTL
            zombie.freeze()
            frozen_at = datetime.now(UTC)
            time.sleep(frozen_for)
            freezes.append((frozen_at, datetime.now(UTC)))
            zombie.resume()
        time.sleep(1.0)                                # the last thaw's aftermath
        codes = [zombie.terminate()[0], steady.terminate()[0]]
        # Calm: one replica with schedules off finishes whatever was left in flight.
        config, port = daemon_config(world, "final", schedule="enabled = false")
        final = Daemon(world, config, port, name="final")
        final.wait_ready()
        try:
            wait_for(world.settled, 30, "every rotation to finish after the soak")
        except AssertionError as exc:
            stuck = [(r.target, r.rotation_id, r.step.value, r.reason)
                     for r in world.rotations() if r.status is Status.RUNNING]
            problems.append(f"{exc}: still running {stuck}")
        codes.append(final.terminate()[0])
    finally:
        for daemon in (zombie, steady, final):
            if daemon is not None:
                daemon.close()
    statuses = Counter(r.status for r in world.rotations())
    frozen = sum((end - start).total_seconds() for start, end in freezes)
    print(f"freezes {len(freezes)} ({frozen:.1f}s frozen); take-overs "
          f"{_take_overs(steady, freezes)}; rotations "
          + ", ".join(f"{s.value} {statuses[s]}" for s in Status if statuses[s])
          + f"; the frozen replica logged lease_lost {_count(zombie, 'lease_lost')} times")
    if codes != [0, 0, 0]:
        problems.append(f"exit codes (zombie, steady, final): {codes}")
    if not freezes:
        problems.append("the soak was too short to freeze anything")
    if statuses[Status.COMPLETED] < len(TARGETS):
        problems.append(f"fewer completed rotations than targets: {statuses}")
    problems += world.ending_problems()
    code, report = world.verify()
    if code != 0:
        problems.append(report)
    for name in TARGETS:
        try:
            world.assert_invariants(name)
        except AssertionError as exc:
            problems.append(f"{name}: {exc}")
    assert not problems, f"seed {seed}:\n" + "\n".join(problems)
