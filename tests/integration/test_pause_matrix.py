"""The pause matrix: a replica frozen at a step boundary until its lease lapsed, whose target
another replica then took over, is thawed and must change nothing.

The first replica (``rotator run``) stops itself with SIGSTOP (``ROTATOR_TEST_PAUSE_AT``)
at each boundary of ``tests.integration.boundaries`` (the crash matrix's). A second
replica takes the target over once the lease has lapsed, and the first is sent SIGCONT
either while the second is at it ("during": as soon as the second holds the lease or has
written a row) or once it has finished ("after"). Then the thawed replica must log
``lease_lost`` and do none of that target's work: no audit row carries its lease
generation after the freeze, and in "after" nothing changed at all (SQL, Vault, the keys
at Count). Every rotation has one ending, Vault's key works, no key leaked, and
``rotator verify`` finds nothing.

On PostgreSQL the second is a replica beside the frozen one. SQLite takes one replica, so
there the second is a daemon started on the same file once the first is frozen, that
waits for the frozen one's claim to lapse: the thawed one has lost its claim as well, and
should stop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from rotator.adapters.sql.repository import SqlRepository
from rotator.adapters.sql.schema import make_engine
from rotator.adapters.sql.tables import leases, pending_cleanups, rotation_events, rotations
from rotator.daemon.run import DAEMON_LEASE
from tests.integration.boundaries import (
    CASES,
    assert_stopped_at,
    boundary_daemon_config,
    end_problems,
    prepare,
)
from tests.integration.conftest import MakeWorld
from tests.integration.daemon_process import Daemon, pause_env, wait_for
from tests.integration.proxy import CuttableProxy
from tests.integration.world import World

pytestmark = pytest.mark.integration

ORDERS = ["during", "after"]

# What the thawed replica logs only if it went on with the target's work.
WORK_EVENTS = {"rotation_started", "rotation_resumed", "rotation_step", "rotation_completed",
               "rotation_failed", "revoke_deferred", "rollback_blocked", "cleanup_failed"}
THAWED_TIMEOUT = 3.0   # seconds for the thawed replica to find out that it lost the target
# Seconds for a thawed SQLite daemon to stop once it has: its workers wind down first, slow
# on a loaded machine; what it may not do meanwhile (work, writes) is checked after.
THAWED_EXIT_TIMEOUT = 10.0


class Probe:
    """Polls the world's SQL state on one engine (and Vault and Count, for a snapshot)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.repo = SqlRepository(make_engine(world.db_url))

    def close(self) -> None:
        self.repo.engine.dispose()

    def holder(self) -> str | None:
        """Who holds the target's lease now, if anyone."""
        lease = self.repo.lease_of("app")
        return lease[0] if lease is not None and lease[1] > datetime.now(UTC) else None

    def taken_from(self, first: Daemon, frozen: tuple[Any, ...]) -> bool:
        """Whether another process took the target's lease from ``first`` (or let it go
        again) or wrote a row since ``frozen``."""
        lease = self.repo.lease_of("app")
        # A holder id is host:pid:nonce (rotator.app.operations.holder_id).
        return (lease is None or lease[0].split(":")[1] != str(first.proc.pid)
                or self.rows() != frozen)

    def generation_of(self, first: Daemon) -> int | None:
        """The generation of the target's lease if ``first`` holds it (else ``None``)."""
        with self.repo.engine.connect() as conn:
            row = conn.execute(select(leases.c.holder, leases.c.generation)
                               .where(leases.c.target == "app")).first()
        return (row.generation if row is not None
                and row.holder.split(":")[1] == str(first.proc.pid) else None)

    def written_under(self, generation: int, after_id: int) -> list[tuple[Any, ...]]:
        """Audit rows after ``after_id`` written under lease ``generation``."""
        events = rotation_events.c
        with self.repo.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(
                select(events.id, events.kind, events.action)
                .where(events.target == "app", events.id > after_id,
                       events.lease_generation == generation))]

    def rows(self) -> tuple[Any, ...]:
        """Every rotation row, the audit trail's length, every cleanup row."""
        with self.repo.engine.connect() as conn:
            return (
                [tuple(r) for r in conn.execute(
                    select(rotations).order_by(rotations.c.rotation_id))],
                tuple(conn.execute(select(func.count(), func.max(rotation_events.c.id))).one()),
                [tuple(r) for r in conn.execute(
                    select(pending_cleanups).order_by(pending_cleanups.c.key_id))],
            )

    def everything(self) -> tuple[Any, ...]:
        """``rows``, Vault's current version and the keys alive at Count."""
        return (self.rows(), self.world.vault_secret("app")[0],
                sorted(self.world.live_key_ids("app")))

    def settled(self) -> bool:
        return not self.repo.all_running() and not self.repo.all_pending_cleanups()

    def idle(self) -> bool:
        """Settled, and nobody holds the target."""
        return self.settled() and self.holder() is None


class SecondReplica:
    """The replica that takes over, kept off the target until the first is frozen. On
    PostgreSQL it starts beside the first, so that its start-up (the slow part of a case)
    overlaps the first's run, behind a database proxy that is cut until then. On SQLite it
    starts once the first is frozen: a daemon started while the first's claim is renewed is
    refused at once (exit 3), and the frozen one's claim it waits for until it lapses.
    """

    def __init__(self, world: World, path: str, probe: Probe) -> None:
        self.probe = probe
        self.gate: CuttableProxy | None = None
        replace = {}
        if not world.db_url.startswith("sqlite"):
            port = make_url(world.db_url).port or 5432
            self.gate = CuttableProxy(port)
            self.gate.cut()
            replace = {f"@127.0.0.1:{port}/": f"@127.0.0.1:{self.gate.port}/"}
        self.config, self.port = boundary_daemon_config(world, "second", path, replace)
        self.world = world
        self.lives = 0
        self._daemon: Daemon | None = None
        if self.gate is not None:
            self._start()

    @property
    def daemon(self) -> Daemon:
        assert self._daemon is not None, "the second replica was never started"
        return self._daemon

    def _start(self) -> None:
        self.lives += 1
        name = "second" if self.lives == 1 else f"second-{self.lives}"
        self._daemon = Daemon(self.world, self.config, self.port, name=name)

    def let_in(self) -> None:
        """The first is frozen: let the second at the target."""
        if self.gate is not None:
            self.gate.restore()
            return
        self._start()
        # Its claim was renewed at most a heartbeat (lease_ttl / 3) before the freeze, so
        # the second's start-up outlasts the live window; should it not (refused, exit 3),
        # it is started once more.
        wait_for(lambda: self.daemon.proc.poll() is not None or self._claimed(), 10,
                 lambda: f"the second daemon to claim SQLite or give up:\n"
                         f"{self.daemon.logs()[-2000:]}", interval=0.01)
        if self.daemon.proc.poll() is not None:
            self._start()

    def _claimed(self) -> bool:
        """Whether the second daemon holds the SQLite claim."""
        held = self.probe.repo.lease_of(DAEMON_LEASE)
        # A holder id is host:pid:nonce (rotator.app.operations.holder_id).
        return held is not None and held[0].split(":")[1] == str(self.daemon.proc.pid)

    def close(self) -> None:
        if self._daemon is not None:
            self._daemon.close()
        if self.gate is not None:
            self.gate.close()


def _soon(check: Callable[[], bool], timeout: float) -> bool:
    try:
        wait_for(check, timeout, "", interval=0.01)
    except AssertionError:
        return False
    return True


def _thawed_work(first: Daemon, mark: int) -> list[dict[str, Any]]:
    return [e for e in first.events(mark)
            if e.get("event") in WORK_EVENTS and e.get("target", "app") == "app"]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize(("path", "point"), CASES)
def test_a_replica_thawed_after_a_take_over_changes_nothing(
        make_world: MakeWorld, path: str, point: str, order: str) -> None:
    world, extra_env = prepare(make_world, path)
    sqlite = world.db_url.startswith("sqlite")
    old_secret = world.accounts["app"].secret
    probe = Probe(world)
    first = Daemon(world, *boundary_daemon_config(world, "first", path),
                   env={**pause_env(point), **extra_env}, name="first")
    second: SecondReplica | None = None
    problems: list[str] = []
    clock = {"start": time.monotonic()}
    try:
        second = SecondReplica(world, path, probe)
        first.wait_stopped(60)
        clock["frozen"] = time.monotonic()
        frozen = probe.rows()
        generation = probe.generation_of(first)   # None: taken already (a lease near expiry)
        assert_stopped_at(world, point)
        # At step:done nothing is left to take over: the first was only writing the ending.
        work_left = not probe.settled()
        second.let_in()
        if work_left:
            wait_for(lambda: probe.taken_from(first, frozen), 30,
                     lambda: f"the second replica to take the target over:\n"
                             f"{second.daemon.logs()[-2000:]}", interval=0.01)
        else:
            second.daemon.wait_ready()
        clock["taken"] = time.monotonic()
        if order == "after":
            wait_for(probe.idle, 30, "the second replica to finish", interval=0.01)
            clock["finished"] = time.monotonic()
        busy = not probe.idle()
        before = probe.everything()
        mark = first.resume()
        clock["thawed"] = time.monotonic()
        ends = {"lease_lost"} if work_left else {"lease_lost", "rotation_completed",
                                                  "rotation_failed"}
        if not _soon(lambda: any(e.get("event") in ends for e in first.events(mark)),
                     THAWED_TIMEOUT):
            problems.append(f"thawed, it logged none of {sorted(ends)} "
                            f"within {THAWED_TIMEOUT:g}s")
        if sqlite and not _soon(lambda: first.proc.poll() is not None, THAWED_EXIT_TIMEOUT):
            problems.append(f"thawed, it kept running on SQLite {THAWED_EXIT_TIMEOUT:g}s "
                            "after losing its claim")
        first.kill()
        clock["killed"] = time.monotonic()
        if work_left and (done := _thawed_work(first, mark)):
            problems.append(f"thawed, it went on with the target's work: {done}")
        last_id = frozen[1][1] or 0
        if work_left and generation is not None and (
                rows := probe.written_under(generation, last_id)):
            problems.append(f"thawed, it wrote audit rows under its lost lease: {rows}")
        if work_left and order == "after" and (after := probe.everything()) != before:
            problems.append(f"thawed, it changed the world:\n  {before}\n  {after}")
        # Idle, not only settled: the ending note follows the state, the release the note.
        if not _soon(probe.idle, 30):
            problems.append("the rotation never settled")
        if (code := second.daemon.terminate()[0]) != 0:
            problems.append(f"the second replica exited {code}")
        problems += world.ending_problems() + end_problems(world, path, old_secret)
    finally:
        first.close()
        if second is not None:
            second.close()
        probe.close()
    phases = " ".join(f"{name} {at - clock['start']:.2f}" for name, at in clock.items())
    print(f"\npause {path}/{point}/{order}/{'sqlite' if sqlite else 'pg'}: {phases}; "
          f"work_left={work_left} second_busy_at_thaw={busy} second_lives={second.lives}")
    assert not problems, "\n".join(problems) + f"\n--- thawed:\n{first.logs(mark)[-4000:]}"
