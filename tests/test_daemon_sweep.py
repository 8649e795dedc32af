"""The daemon's sweep with a clock the tests control: schedules fire exactly when they
should, on SQLite and PostgreSQL, and a restart mid-grace revokes on time.

The sweep runs its work inline here (no threads), against the state store (in memory, and
the real SQL repository on both databases) and the fake provider and Vault, so every
decision comes from what the store holds, as in production.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, ItemsView, Iterator, KeysView
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event
from structlog.testing import capture_logs

from rotator.adapters.sql.repository import SqlRepository
from rotator.app.orphans import Configured, orphans
from rotator.core.model import Rotation, ScheduleFacts, Status, Step
from rotator.core.ports import SecretRef
from rotator.core.target import TargetSpec
from rotator.daemon.metrics import DaemonMetrics
from rotator.daemon.sweep import FULL_SWEEP_EVERY, Sweeper
from rotator.daemon.workers import WorkerPool
from rotator.engine.runner import Runner
from rotator.scheduling.schedule import Schedule, parse_window
from tests.fakes import FakeClock, FakeProvider, FakeStore
from tests.fixtures.databases import StateStore

DAY = 86400.0
# A Monday, 10:00 UTC.
START = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)


class InlinePool:
    """The worker pool's interface, running each job at once on the caller's thread."""

    def busy(self) -> set[str]:
        return set()

    def submit(self, target: str, job: Callable[[], object]) -> bool:
        job()
        return True


class Fleet:
    """Targets of one account each, a fake provider and Vault, and a state store."""

    def __init__(self, make_state: Callable[[Callable[[], datetime]], StateStore],
                 schedules: dict[str, Schedule], grace: float = 60.0) -> None:
        self.clock = FakeClock(START)
        self.repo = make_state(self.clock.now)
        self.provider = FakeProvider(self.clock)
        self.store = FakeStore()
        self.admin = self.provider.seed("sa_admin")
        self.schedules = schedules
        self.specs: dict[str, TargetSpec] = {}
        for name in schedules:
            ref = SecretRef("secret", f"count/{name}", "api_key")
            self.store.put(ref, self.provider.seed(f"sa_{name}"))
            self.specs[name] = TargetSpec(
                name=name, provider="count", service_account=f"sa_{name}", ref=ref,
                grace_seconds=grace, probe_timeout=10, probe_interval=1,
                management_key=self.admin)
        self.metrics = DaemonMetrics(now=self.clock.now)
        self.wakes: list[datetime] = []
        self.providers = {"count"}     # what the config names, for its orphans' fate
        self.restart()

    def _orphan_spec(self, source: Rotation) -> TargetSpec:
        """What ``runtime.orphan_spec`` builds: the row's all, the provider's admin key."""
        assert source.provider is not None and source.vault_ref is not None
        return TargetSpec(name=source.target, provider=source.provider,
                          service_account=source.service_account, ref=source.vault_ref,
                          grace_seconds=source.grace_seconds, probe_timeout=10,
                          probe_interval=1, management_key=self.admin)

    def _configured(self) -> Configured:
        return Configured({name: spec.ref for name, spec in self.specs.items()
                           if name in self.schedules}, dict.fromkeys(self.providers))

    def restart(self, holder: str = "replica-1") -> None:
        """A new process: a new runner and sweeper; only SQL and the outside world remain."""
        runner = Runner(providers={"count": self.provider}, store=self.store, repo=self.repo,
                        clock=self.clock, holder=holder, lease_ttl=30,
                        observer=self.metrics)
        self.sweeper = Sweeper(repo=self.repo, runner=runner, pool=InlinePool(),  # type: ignore[arg-type]
                               clock=self.clock, metrics=self.metrics,
                               specs=self.specs.__getitem__, schedules=self.schedules,
                               actor="test", wake_at=self.wakes.append,
                               orphans=lambda: orphans(self.repo, self._configured()),
                               orphan_spec=self._orphan_spec)

    def sweep(self) -> datetime | None:
        return self.sweeper.sweep()

    def at(self, when: datetime) -> datetime | None:
        self.clock.current = when
        return self.sweep()

    def started(self, target: str) -> list[datetime]:
        return [r.started_at for r in self.repo.rotations(target)]

    def creates(self) -> int:
        return self.provider.calls.count("create_key")


@pytest.fixture
def fleet(make_state: Callable[[Callable[[], datetime]], StateStore]) -> Callable[..., Fleet]:
    def make(schedules: dict[str, Schedule], grace: float = 60.0) -> Fleet:
        return Fleet(make_state, schedules, grace)
    return make


def _completed(fleet: Fleet, target: str) -> list[datetime]:
    return [r.started_at for r in fleet.repo.rotations(target, Status.COMPLETED)]


def test_interval_first_rotation_at_once_then_exactly_every_period(
        fleet: Callable[..., Fleet]) -> None:
    f = fleet({"app": Schedule(every=7 * DAY)}, grace=0)
    f.sweep()
    assert _completed(f, "app") == [START]             # a key of unknown age: rotated now
    wake = f.at(START + timedelta(days=7, seconds=-1))
    assert _completed(f, "app") == [START]             # one second early: nothing
    assert wake == START + timedelta(days=7)           # and the daemon knows when to wake
    f.at(START + timedelta(days=7))
    assert _completed(f, "app") == [START, START + timedelta(days=7)]
    f.sweep()
    assert f.creates() == 2                            # a second sweep starts nothing more


def test_a_restart_does_not_shift_or_skip_the_schedule(fleet: Callable[..., Fleet]) -> None:
    f = fleet({"app": Schedule(every=DAY)}, grace=0)
    f.sweep()
    f.restart()
    f.at(START + timedelta(hours=23))
    f.restart()
    assert f.at(START + timedelta(hours=23, minutes=59)) == START + timedelta(days=1)
    f.restart()
    f.at(START + timedelta(days=1))
    assert _completed(f, "app") == [START, START + timedelta(days=1)]


def test_cron_in_a_time_zone_fires_at_local_wall_clock_time(
        fleet: Callable[..., Fleet]) -> None:
    # 03:00 in Berlin on Mondays: 02:00 UTC in winter (CET, UTC+1).
    f = fleet({"app": Schedule(cron="0 3 * * MON", timezone="Europe/Berlin")}, grace=0)
    f.sweep()
    assert _completed(f, "app") == [START]             # never rotated: at once, like every
    monday = datetime(2026, 11, 9, 2, 0, tzinfo=UTC)
    assert f.sweep() == monday
    f.at(monday - timedelta(seconds=1))
    assert len(_completed(f, "app")) == 1
    f.at(monday)
    assert _completed(f, "app") == [START, monday]
    assert f.sweep() == monday + timedelta(days=7)     # a worker's end triggers this sweep


def test_rotation_window_holds_a_due_rotation_until_it_opens(
        fleet: Callable[..., Fleet]) -> None:
    window = parse_window("02:00-05:00")
    f = fleet({"app": Schedule(every=DAY, window=window)}, grace=0)
    opens = datetime(2026, 11, 3, 2, 0, tzinfo=UTC)     # START is 10:00: next opening
    assert f.sweep() == opens
    f.at(opens - timedelta(minutes=1))
    assert _completed(f, "app") == []
    f.at(opens)
    assert _completed(f, "app") == [opens]


def test_jitter_spreads_targets_within_its_bound_and_is_stable_across_restarts(
        fleet: Callable[..., Fleet]) -> None:
    names = [f"t{i}" for i in range(12)]
    f = fleet({n: Schedule(every=DAY, jitter=3600.0) for n in names}, grace=0)
    f.sweep()                                          # first rotations: all at once
    assert all(_completed(f, n) == [START] for n in names)
    wake = f.sweep()
    while wake is not None and wake < START + timedelta(days=1, hours=2):
        f.restart()                                    # a restart before every wake-up
        f.at(wake)
        wake = f.sweep()
    seconds = [(_completed(f, n)[1] - START).total_seconds() - 86400 for n in names]
    assert all(0 <= s < 3600 for s in seconds)         # each within its jitter
    assert len(set(seconds)) > 6                       # spread out, not all at once
    assert all(len(_completed(f, n)) == 2 for n in names)


def test_max_key_age_forces_a_rotation_ahead_of_the_schedule_and_outside_the_window(
        fleet: Callable[..., Fleet]) -> None:
    window = parse_window("02:00-03:00")
    f = fleet({"app": Schedule(every=30 * DAY, max_key_age=2 * DAY, window=window)}, grace=0)
    opens = datetime(2026, 11, 3, 2, 0, tzinfo=UTC)
    f.at(opens)                                        # first rotation, in the window
    assert _completed(f, "app") == [opens]
    forced = opens + timedelta(days=2)                 # 02:00: still in the window, by chance
    f.at(forced - timedelta(seconds=1))
    assert len(_completed(f, "app")) == 1
    f.at(forced + timedelta(hours=5))                  # 07:00: outside, yet forced
    rotations = f.repo.rotations("app", Status.COMPLETED)
    assert [r.trigger for r in rotations] == ["first_rotation", "max_key_age"]


def test_restart_mid_grace_resumes_and_revokes_on_time(fleet: Callable[..., Fleet]) -> None:
    f = fleet({"app": Schedule(every=30 * DAY)}, grace=600)
    f.sweep()
    rot = f.repo.running_rotation("app")
    assert rot is not None and rot.step is Step.GRACE and rot.grace_ends_at is not None
    assert f.wakes == [rot.grace_ends_at]              # the worker asks to wake at its end
    f.restart()                                        # the daemon restarts mid-grace
    wake = f.at(rot.grace_ends_at - timedelta(seconds=1))
    assert wake == rot.grace_ends_at                   # still in grace: wake at its end
    assert rot.old_key_id in {k for k in f.provider.keys}
    f.at(rot.grace_ends_at)
    done = f.repo.get_rotation(rot.rotation_id)
    assert done is not None and done.status is Status.COMPLETED
    assert done.finished_at == rot.grace_ends_at       # revoked exactly at the deadline
    assert rot.old_key_id not in f.provider.keys
    assert f.creates() == 1


def test_a_stale_due_decision_starts_nothing_once_another_replica_rotated(
        fleet: Callable[..., Fleet]) -> None:
    f = fleet({"app": Schedule(every=DAY)}, grace=0)
    replica_b = f.sweeper
    f.restart(holder="replica-2")
    replica_a = f.sweeper
    # B decided "app is due", then A rotated it before B's worker took the lease.
    original = replica_b.pool.submit
    pending: list[Callable[[], object]] = []
    replica_b.pool.submit = lambda _t, job: pending.append(job) or True  # type: ignore[method-assign]
    replica_b.sweep()
    replica_a.sweep()
    assert len(pending) == 1 and f.creates() == 1
    pending[0]()
    replica_b.pool.submit = original  # type: ignore[method-assign]
    assert f.creates() == 1 and len(f.repo.rotations("app")) == 1


def test_failed_attempts_back_off_instead_of_retrying_every_sweep(
        fleet: Callable[..., Fleet]) -> None:
    f = fleet({"app": Schedule(every=DAY, retry_failed_after=600.0)}, grace=0)
    f.provider.never_authenticates = True
    f.sweep()
    assert [r.status for r in f.repo.rotations("app")] == [Status.ROLLED_BACK]
    failed_at = f.repo.rotations("app")[0].finished_at
    assert failed_at is not None
    assert f.at(failed_at + timedelta(seconds=599)) == failed_at + timedelta(seconds=600)
    assert len(f.repo.rotations("app")) == 1
    f.at(failed_at + timedelta(seconds=600))
    assert len(f.repo.rotations("app")) == 2           # the first retry, after 10 minutes
    second = f.repo.rotations("app")[1].finished_at
    assert second is not None
    f.at(second + timedelta(seconds=1199))             # then 20 minutes
    assert len(f.repo.rotations("app")) == 2
    f.provider.never_authenticates = False
    f.at(second + timedelta(seconds=1200))
    assert f.repo.rotations("app")[-1].status is Status.COMPLETED


def test_queued_key_deletions_are_retried_by_the_sweep(fleet: Callable[..., Fleet]) -> None:
    f = fleet({"app": Schedule(every=30 * DAY)}, grace=0)
    from rotator.core.errors import ProviderUnavailable  # noqa: PLC0415
    f.provider.fail["delete_key"] = ProviderUnavailable("503")
    f.sweep()
    assert len(f.repo.all_pending_cleanups()) == 1
    old = f.repo.all_pending_cleanups()[0].key_id
    del f.provider.fail["delete_key"]
    f.at(START + timedelta(minutes=1))
    assert f.repo.all_pending_cleanups() == []
    assert old not in f.provider.keys and f.creates() == 1


def test_metrics_follow_the_rotations(fleet: Callable[..., Fleet]) -> None:
    f = fleet({"a": Schedule(every=DAY), "b": Schedule(every=DAY)}, grace=0)
    f.sweeper.request(["b"])
    f.provider.never_authenticates = True              # new keys never work: roll back
    f.sweep()                                          # a: first rotation; b: asked for
    f.provider.never_authenticates = False
    success = START + timedelta(hours=2)               # past the 1h back-off
    f.at(success)
    f.provider.never_authenticates = True              # now even Vault's key fails: refused
    f.at(success + timedelta(days=1))
    f.clock.current = success + timedelta(days=1, hours=5)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(f.metrics.render().decode())
               for s in fam.samples}

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("rotator_rotations_started_total", target="a", trigger="first_rotation") == 2
    assert value("rotator_rotations_started_total", target="b", trigger="run_rotate") == 1
    assert value("rotator_rotations_started_total", target="b", trigger="first_rotation") == 1
    assert value("rotator_rotations_started_total", target="a", trigger="schedule") == 1
    assert value("rotator_rotations_rolled_back_total", target="a", reason="verify") == 1
    assert value("rotator_rotations_rolled_back_total", target="b", reason="verify") == 1
    assert value("rotator_rotations_completed_total", target="a") == 1
    assert value("rotator_rotations_completed_total", target="b") == 1
    assert value("rotator_rotations_failed_total", target="a", reason="plan") == 1
    assert value("rotator_seconds_since_last_success", target="b") == 29 * 3600
    assert value("rotator_key_age_seconds", target="a") == 29 * 3600
    assert value("rotator_rotations_in_flight") == 0
    assert value("rotator_step_duration_seconds_count", step="plan") == 6
    assert value("rotator_step_duration_seconds_count", step="rollback") == 2


def test_a_long_run_keeps_one_outcome_per_target(fleet: Callable[..., Fleet]) -> None:
    f = fleet({"a": Schedule(every=DAY), "b": Schedule(every=DAY)}, grace=0)
    for day in range(30):
        f.at(START + timedelta(days=day))
    assert len(_completed(f, "a")) == len(_completed(f, "b")) == 30
    latest = f.sweeper.latest_outcomes()
    assert sorted(latest) == ["a", "b"]                # not one entry per rotation
    for target, outcome in latest.items():
        assert outcome.rotation is not None and outcome.rotation.status is Status.COMPLETED
        assert outcome.rotation.started_at == START + timedelta(days=29)
        assert outcome.rotation == f.repo.rotations(target, Status.COMPLETED)[-1]


def test_a_sweep_that_waits_for_workers_starts_every_due_target_with_one_worker(
        fleet: Callable[..., Fleet]) -> None:
    names = ("a", "b", "c")
    f = fleet({name: Schedule(every=DAY) for name in names})
    pool = WorkerPool(1)
    f.sweeper.pool = pool
    f.sweeper.wait_for_workers = True
    f.sweep()
    assert pool.join(10)
    for name in names:   # each ran up to its grace window, one after the other
        assert [r.step for r in f.repo.rotations(name)] == [Step.GRACE], name
    assert f.sweeper.sweeps == 1


def test_a_waiting_sweep_that_is_stopped_starts_nothing_more(
        fleet: Callable[..., Fleet]) -> None:
    f = fleet({name: Schedule(every=DAY) for name in ("a", "b")})
    f.sweeper.pool = WorkerPool(1)
    f.sweeper.wait_for_workers = True
    f.sweeper.stopping = lambda: True
    f.sweep()
    assert f.creates() == 0 and f.sweeper.sweeps == 0   # cut short: not a whole sweep


def test_between_full_sweeps_only_the_targets_whose_look_has_come_are_read(
        fleet: Callable[..., Fleet]) -> None:
    """A sweep's cost follows what is due, not the fleet: targets decided not due are read
    again at their due time (or by the next full sweep), not at every poll."""
    f = fleet({f"t{i}": Schedule(every=3600.0) for i in range(5)}, grace=0.0)
    f.sweep()                                       # the first sweep is full: all rotate
    assert all(len(_completed(f, f"t{i}")) == 1 for i in range(5))
    reads: list[set[str] | None] = []
    read_all = f.repo.all_schedule_facts

    def spy(targets: Collection[str] | None = None) -> dict[str, ScheduleFacts]:
        reads.append(None if targets is None else set(targets))
        return read_all(targets)

    f.repo.all_schedule_facts = spy                 # type: ignore[method-assign]
    f.at(START + timedelta(minutes=1))              # the five just ended here: decided again
    f.at(START + timedelta(minutes=2))              # nothing due, nothing read
    f.at(START + timedelta(minutes=3))
    assert reads == [{f"t{i}" for i in range(5)}]
    f.at(START + FULL_SWEEP_EVERY + timedelta(seconds=1))   # a full sweep reads them all
    assert reads[-1] == {f"t{i}" for i in range(5)}
    reads.clear()
    f.at(START + FULL_SWEEP_EVERY + timedelta(minutes=2))
    assert reads == []
    f.at(START + timedelta(hours=1, seconds=1))     # due: rotated
    assert all(len(_completed(f, f"t{i}")) == 2 for i in range(5))


class CountedSchedules(dict[str, Schedule]):
    """The sweeper's schedules, counting every walk over them (not the lookups by name)."""

    walks = 0

    def __iter__(self) -> Iterator[str]:
        self.walks += 1
        return super().__iter__()

    def keys(self) -> KeysView[str]:    # type: ignore[override]
        self.walks += 1
        return super().keys()

    def items(self) -> ItemsView[str, Schedule]:    # type: ignore[override]
        self.walks += 1
        return super().items()


def test_between_full_sweeps_a_sweep_walks_no_target_it_does_not_decide(
        fleet: Callable[..., Fleet]) -> None:
    """Its CPU follows the targets whose look came, not the fleet: the next looks are kept in
    time order, and the earliest of them is the sweep's wake-up."""
    schedules = CountedSchedules({f"t{i}": Schedule(every=3600.0 * (i + 1)) for i in range(4)})
    f = fleet(schedules, grace=0.0)
    f.sweep()
    f.at(START + timedelta(minutes=1))              # the ones that just ended: decided again
    schedules.walks = 0
    for minute in range(2, 5):
        wake = f.at(START + timedelta(minutes=minute))
        assert wake is not None and wake - START == timedelta(hours=1)   # t0's due time
    assert schedules.walks == 0
    f.at(START + timedelta(hours=1, seconds=1))     # a full one again: walks them all
    assert [len(_completed(f, f"t{i}")) for i in range(4)] == [2, 1, 1, 1]
    schedules.walks = 0
    f.at(START + timedelta(hours=1, seconds=30))    # t0 just ended here: decided again
    assert f.at(START + timedelta(hours=1, minutes=1)) == START + timedelta(hours=2)
    assert schedules.walks == 0
    # Many moves of the same looks leave the heap in proportion to the fleet.
    for _ in range(300):
        f.sweeper._look_again("t3", START + timedelta(days=1))
    assert len(f.sweeper._look_heap) <= 2 * len(schedules) + 64


def test_a_queued_deletion_and_a_due_rotation_of_one_target_both_run_in_one_sweep(
        fleet: Callable[..., Fleet]) -> None:
    """With real workers too: one job holds the target for both, in order (as two jobs the
    rotation found the target busy and waited for a sweep that never found it free while
    the deletion kept failing)."""
    from rotator.core.errors import ProviderUnavailable  # noqa: PLC0415
    f = fleet({"app": Schedule(every=DAY)}, grace=0)
    f.provider.fail["delete_key"] = ProviderUnavailable("503")
    f.sweep()
    assert len(f.repo.all_pending_cleanups()) == 1
    del f.provider.fail["delete_key"]
    pool = WorkerPool(1)
    f.sweeper.pool = pool
    f.at(START + timedelta(days=1, seconds=1))      # due again, a deletion still queued
    assert pool.join(10)
    assert f.repo.all_pending_cleanups() == []
    assert len(_completed(f, "app")) == 2


def test_a_rotation_writes_a_transaction_a_step_and_three_a_side_effect(
        repository: SqlRepository) -> None:
    """A step's notes, its state and the lease's renewal share one transaction; a side effect
    takes its intent, the lease confirmed right before the call, and its outcome."""
    f = Fleet(lambda now: SqlRepository(repository.engine, now),
              {"t": Schedule(every=3600.0)}, grace=0.0)
    commits: list[object] = []
    event.listen(repository.engine, "commit", commits.append)
    f.sweep()
    assert len(_completed(f, "t")) == 1
    steps = 6              # plan, create, verify, store, grace over, revoke
    effects = 3            # create, Vault write, delete
    lease = 2              # taken, released
    started = 2            # the rotation's row, then its first note
    assert len(commits) == steps + 3 * effects + lease + started


def _dropped_in_grace(f: Fleet, providers: set[str] | None = None) -> Rotation:
    """``gone``'s rotation, in its grace window, once ``gone`` (and, with ``providers``,
    every provider but those) has left the config of a restarted daemon."""
    f.sweep()
    rot = f.repo.running_rotation("gone")
    assert rot is not None and rot.step is Step.GRACE and rot.grace_ends_at is not None
    del f.schedules["gone"]
    if providers is not None:
        f.providers = providers
    f.restart()
    return rot


def test_a_target_dropped_from_the_config_mid_rotation_is_finished_as_it_began_once(
        fleet: Callable[..., Fleet]) -> None:
    f = fleet({"app": Schedule(every=30 * DAY), "gone": Schedule(every=30 * DAY)}, grace=600)
    rot = _dropped_in_grace(f)
    ref = f.specs["gone"].ref
    assert (rot.provider, rot.vault_ref) == ("count", ref)
    with capture_logs() as logs:
        assert f.sweep() == rot.grace_ends_at               # in grace: woken at its end
        assert rot.grace_ends_at is not None
        f.at(rot.grace_ends_at + timedelta(seconds=1))     # its grace is over: finished
        f.sweep()
    said = [e for e in logs if e["event"] == "orphan_target"]
    assert [(e["target"], e["rotation_id"], e["step"], e["finished"]) for e in said] == [
        ("gone", rot.rotation_id, "grace", True)]
    assert "is finished by the next `rotator run --once`" in said[0]["detail"]
    done = f.repo.get_rotation(rot.rotation_id)
    assert done is not None and done.status is Status.COMPLETED
    assert rot.old_key_id in f.provider.deleted and rot.old_key_id not in f.provider.keys
    assert f.provider.key_of(f.store.current(ref)) == rot.new_key_id
    # Never rotated again, however long the daemon runs.
    f.at(rot.grace_ends_at + timedelta(days=90))
    assert [r.rotation_id for r in f.repo.rotations("gone")] == [rot.rotation_id]


def test_a_dropped_target_whose_provider_is_gone_is_warned_of_once_and_left_alone(
        fleet: Callable[..., Fleet]) -> None:
    f = fleet({"app": Schedule(every=30 * DAY), "gone": Schedule(every=30 * DAY)}, grace=600)
    rot = _dropped_in_grace(f, providers=set())
    assert rot.grace_ends_at is not None
    with capture_logs() as logs:
        f.at(rot.grace_ends_at + timedelta(seconds=1))     # its grace is over: still not run
        f.sweep()
    said = [e for e in logs if e["event"] == "orphan_target"]
    assert [(e["target"], e["rotation_id"], e["step"], e["finished"]) for e in said] == [
        ("gone", rot.rotation_id, "grace", False)]
    assert "its provider 'count' is no longer in the config" in said[0]["detail"]
    assert f.repo.get_rotation(rot.rotation_id) == rot
