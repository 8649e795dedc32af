"""One pass of the daemon over SQL: decide each target's work, hand it to the workers.

SQL is the only source of truth for what is due: a sweep re-reads it every time, so a
restarted daemon (or another replica) reaches the same decisions. A decision made here
is asked again under the target's lease (``Runner.rotate_if``), so two replicas that
both saw a target due start one rotation between them, not two.

Work SQL holds for a target no longer in the config (``app.orphans``) is finished here
too, when its rows say how (their provider still configured): through the same runner,
with the spec built from the row (rolled back while still before its store), and never
started again.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog

from rotator.app.orphans import Orphan
from rotator.core.errors import LeaseHeld, LeaseLost, RotatorError
from rotator.core.model import Rotation, ScheduleFacts, Status, Step
from rotator.core.ports import Clock, RotationReader
from rotator.core.target import TargetSpec
from rotator.core.vocabulary import Trigger
from rotator.daemon import planner
from rotator.daemon.metrics import DaemonMetrics
from rotator.daemon.planner import Work, WorkKind
from rotator.daemon.workers import WorkerPool
from rotator.engine.runner import Runner
from rotator.scheduling.schedule import Schedule

__all__ = ["FULL_SWEEP_EVERY", "Outcome", "Sweeper"]

log = structlog.get_logger("rotator.daemon")

_NO_HISTORY = ScheduleFacts(None, 0, None)

# Why the daemon rolls back a rotation of a target no longer in the config (the audit's
# cancel note and the rotation's failure say it).
ORPHAN_ROLLBACK = ("its target is no longer in the config; rolled back before its new key "
                   "reached Vault")
# Between full sweeps (every target read and decided) at most this far apart, a sweep
# looks only at the targets whose next look has come, that run, have keys to clean up,
# were asked for or just ended here: so its cost follows the targets due, not the fleet.
# What other processes changed meanwhile is seen at the latest by the next full sweep.
FULL_SWEEP_EVERY = timedelta(minutes=5)
# Looking again at this: a schedule that never fires (until the next full sweep).
_NEVER = datetime.max.replace(tzinfo=UTC)
# The heap of next looks is rebuilt when stale entries (looks moved since) outnumber the
# live ones this many times over, so it stays in proportion to the fleet.
_HEAP_SLACK = 2
# Targets read by name up to this many (an IN list), all of them past it.
_SUBSET_READ_MAX = 500
_ROOM_POLL_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one piece of work ended, for ``--once``'s exit code and the logs."""

    target: str
    rotation: Rotation | None
    error: str | None = None

    @property
    def settled(self) -> bool:
        """Nothing more for this process to do: finished, or waiting out its grace."""
        if self.error is not None:
            return True
        return self.rotation is None or self.rotation.is_terminal or (
            self.rotation.step is Step.GRACE)


@dataclass
class Sweeper:
    repo: RotationReader
    runner: Runner
    pool: WorkerPool
    clock: Clock
    metrics: DaemonMetrics
    specs: Callable[[str], TargetSpec]
    schedules: dict[str, Schedule]
    actor: str
    wake_at: Callable[[datetime], None] = lambda _when: None
    # Told the target after each piece of work that ran: the daemon logs its chain head.
    anchor: Callable[[str], None] = lambda _target: None
    # ``--once``: a target the pool has no worker for now is waited for, not left to a
    # next sweep that a run which exits never has.
    wait_for_workers: bool = False
    stopping: Callable[[], bool] = lambda: False
    # Told each target decided, with what the sweep read of it: the daemon's ``Watch``
    # enqueues the notices of a rotation stuck, a target overdue, a key too old.
    watch: Callable[[str, Schedule, ScheduleFacts, Rotation | None, datetime], None] = (
        lambda _target, _schedule, _facts, _running, _now: None)
    # Only the latest outcome per target is kept (what --once decides on): one entry per
    # configured target however long the daemon runs.
    _outcomes: dict[str, Outcome] = field(default_factory=dict)
    touched: set[str] = field(default_factory=set)   # targets this process has worked on
    sweeps: int = 0                 # sweeps that looked at every target they were asked to
    _manual: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next_look: dict[str, datetime] = field(default_factory=dict)   # see FULL_SWEEP_EVERY
    # The same looks ordered by time, so a sweep finds the ones that came without walking
    # the fleet; an entry whose time no longer matches ``_next_look`` is stale and skipped.
    _look_heap: list[tuple[datetime, str]] = field(default_factory=list)
    # Looked at by the next sweep whatever the time: their schedule just moved.
    _look_next: set[str] = field(default_factory=set)
    _full_at: datetime | None = None
    _orphans_said: set[str] = field(default_factory=set)   # logged once per process
    # Work SQL holds for targets not in ``schedules`` (``app.orphans``), read only when a
    # sweep finds some; and the spec such a target is finished with, built from its row
    # (None: report-only, as before revision 0009).
    orphans: Callable[[], Sequence[Orphan]] = lambda: ()
    orphan_spec: Callable[[Rotation], TargetSpec] | None = None
    _orphan_specs: dict[str, TargetSpec] = field(default_factory=dict)

    def request(self, targets: Iterable[str]) -> None:
        """Rotate these now (``--rotate``): kept until a worker has run them."""
        with self._lock:
            self._manual.update(targets)

    def manual_pending(self) -> set[str]:
        with self._lock:
            return set(self._manual)

    def latest_outcomes(self) -> dict[str, Outcome]:
        """Each target's last noted outcome, by target."""
        with self._lock:
            return dict(self._outcomes)

    def sweep(self, only: set[str] | None = None) -> datetime | None:
        """Dispatch what is due now; return when the next sweep is needed (None: no timer)."""
        now = self.clock.now()
        running, cleanups = self._in_flight()
        found = self._orphans(running, cleanups)
        self._say_orphans(found, running, cleanups)
        manual = self.manual_pending()
        look, wake = self._to_look(now, set(running) | set(cleanups) | manual, only, manual)
        later = self._finish_orphans(found, running, cleanups, only, now)
        if later is not None:
            wake = later if wake is None else min(wake, later)
        history = self._history(look)
        for name in sorted(look):
            schedule = self.schedules[name]
            waited = False
            if self.wait_for_workers:
                room = self._await_room(name)
                if room is None:
                    break
                if room:
                    # Others' work went on meanwhile: decide this one from what SQL says now.
                    now = self.clock.now()
                    running, cleanups = self._in_flight()
                    waited = True
            facts = (self.repo.schedule_facts(name) if waited
                     else history.get(name, _NO_HISTORY))
            decision = self._decide(name, schedule, facts, running.get(name),
                                    cleanups.get(name, 0), name in manual, now)
            if decision.wake_at is not None:
                wake = decision.wake_at if wake is None else min(wake, decision.wake_at)
        else:
            self.sweeps += 1
        return wake

    def _to_look(self, now: datetime, busy: set[str], only: set[str] | None,
                 manual: set[str]) -> tuple[set[str], datetime | None]:
        """The targets this sweep decides (all of them in a full sweep; else those whose
        next look has come and the ``busy`` ones), and the earliest next look of the
        others. A sweep limited to ``only`` (and ``manual``) reads no other target, and is
        never the full one: the targets it leaves out are not decided.

        Between full sweeps the cost follows the targets whose look came, not the fleet:
        they are popped off a heap ordered by time."""
        full = only is None and (
            self._full_at is None or now - self._full_at >= FULL_SWEEP_EVERY)
        if full:
            self._full_at = now
        with self._lock:
            if only is not None:
                names = (only | manual) & self.schedules.keys()
                look = {name for name in names if name in busy or name in self._look_next
                        or self._next_look.get(name, now) <= now}
                later = [self._next_look[name] for name in names - look
                         if name in self._next_look]
                return look, min((at for at in later if at != _NEVER), default=None)
            if full:
                self._look_next.clear()
                return set(self.schedules), None
            look = {name for name in busy | self._look_next if name in self.schedules}
            self._look_next.clear()
            while self._look_heap and self._look_heap[0][0] <= now:
                at, name = heapq.heappop(self._look_heap)
                if self._next_look.get(name) == at:
                    look.add(name)
            return look, self._earliest_look(look)

    def _earliest_look(self, besides: set[str]) -> datetime | None:
        """The first next look still to come of a target not in ``besides`` (lock held).

        Walks the heap from its top only past stale entries (dropped) and the targets of
        ``besides`` (put back), so it costs what this sweep looks at, not the fleet."""
        heap, kept, found = self._look_heap, [], None
        while heap:
            at, name = heapq.heappop(heap)
            if self._next_look.get(name) != at:
                continue   # stale: that target's look moved since
            kept.append((at, name))
            if name not in besides:
                found = at
                break
        for entry in kept:
            heapq.heappush(heap, entry)
        return found

    def _decide(self, name: str, schedule: Schedule, facts: ScheduleFacts,
                running: Rotation | None, cleanups: int, manual: bool,
                now: datetime) -> planner.Decision:
        """Decide one target, dispatch its work, and note when it needs its next look."""
        self.metrics.ages.set(name, facts.last_completed)
        self.watch(name, schedule, facts, running, now)
        decision = planner.decide(name, schedule, facts, running, cleanups, now)
        if decision.due is not None:
            self.metrics.next_due.set(name, decision.due.at.timestamp())
        work = list(decision.work)
        if manual and running is not None:
            # The rotation in flight is the one asked for: finish it, start no other.
            self._forget_manual(name)
            self.touched.add(name)
        elif manual:
            work = [w for w in work if w.kind is not WorkKind.START]
            work.append(Work(name, WorkKind.START, Trigger.RUN_ROTATE))
        if work:
            self._dispatch(work)
        self._look_again(name, decision.wake_at if decision.wake_at is not None
                         else now if decision.work or decision.due is not None
                         else _NEVER)
        return decision

    def _history(self, look: set[str]) -> dict[str, ScheduleFacts]:
        """The schedule facts of the targets ``look`` names, in one read (of them by name
        when they are few, as between full sweeps; of all, past that)."""
        if not look:
            return {}
        return self.repo.all_schedule_facts(look if len(look) <= _SUBSET_READ_MAX else None)

    def _look_again(self, target: str, at: datetime | None) -> None:
        """When ``target`` next needs a look (``None``: at the next sweep)."""
        with self._lock:
            if at is None:
                self._next_look.pop(target, None)
                self._look_next.add(target)
                return
            self._look_next.discard(target)
            self._next_look[target] = at
            if at != _NEVER:
                heapq.heappush(self._look_heap, (at, target))
                if len(self._look_heap) > _HEAP_SLACK * len(self._next_look) + 64:
                    self._look_heap = [(when, name) for name, when in self._next_look.items()
                                       if when != _NEVER]
                    heapq.heapify(self._look_heap)

    def _in_flight(self) -> tuple[dict[str, Rotation], dict[str, int]]:
        """The running rotations and the number of queued key deletions, by target."""
        running = {r.target: r for r in self.repo.all_running()}
        cleanups: dict[str, int] = {}
        for cleanup in self.repo.all_pending_cleanups():
            cleanups[cleanup.target] = cleanups.get(cleanup.target, 0) + 1
        self.metrics.in_flight.set(len(running))
        return running, cleanups

    def _orphans(self, running: dict[str, Rotation],
                 cleanups: dict[str, int]) -> dict[str, Orphan]:
        """The work of each target not configured, by target (the first of it: all of a
        target's work shares one fate). Read only if the work in flight names such a
        target, so it costs nothing otherwise (see FULL_SWEEP_EVERY)."""
        if all(name in self.schedules for name in running.keys() | cleanups.keys()):
            return {}
        found: dict[str, Orphan] = {}
        for orphan in self.orphans():
            found.setdefault(orphan.target, orphan)
        return found

    def _say_orphans(self, found: dict[str, Orphan], running: dict[str, Rotation],
                     cleanups: dict[str, int]) -> None:
        """Warn, once per process, of work SQL holds for a target no longer configured,
        and whether this daemon finishes it or it waits for the target to be put back."""
        # By the work in flight, not by the fleet (see FULL_SWEEP_EVERY).
        unknown = {name for name in running.keys() | cleanups.keys()
                   if name not in self.schedules}
        for name in sorted(unknown - self._orphans_said):
            self._orphans_said.add(name)
            rot, orphan = running.get(name), found.get(name)
            finished = (orphan is not None and orphan.finishable
                        and self.orphan_spec is not None)
            log.warning("orphan_target", target=name,
                        rotation_id=None if rot is None else rot.rotation_id,
                        step=None if rot is None else rot.step.value,
                        queued_deletions=cleanups.get(name, 0), finished=finished,
                        detail=orphan.detail if orphan is not None and (
                            finished or orphan.blocked is not None)
                        else "no longer in the config: its work is not finished here; "
                             "`rotator status` says what to do")

    def _finish_orphans(self, found: dict[str, Orphan], running: dict[str, Rotation],
                        cleanups: dict[str, int], only: set[str] | None,
                        now: datetime) -> datetime | None:
        """Dispatch the work in flight of the orphans whose rows say how to finish it
        (roll back before the store, resume from it, or retry the queue; never a start);
        the earliest wake any needs."""
        wake: datetime | None = None
        for name, orphan in sorted(found.items()):
            if (self.orphan_spec is None or not orphan.finishable or orphan.source is None
                    or (only is not None and name not in only)):
                continue
            spec = self.orphan_spec(orphan.source)
            with self._lock:
                self._orphan_specs[name] = spec
            decision = planner.decide_in_flight(name, running.get(name),
                                                cleanups.get(name, 0), now, orphan=True)
            if decision.work:
                self._dispatch(list(decision.work))
            if decision.wake_at is not None:
                wake = decision.wake_at if wake is None else min(wake, decision.wake_at)
        return wake

    def _await_room(self, target: str) -> bool | None:
        """Wait until a worker can take ``target``: whether that took a wait; ``None`` if
        stopping first. The waits are short so that a stop is seen within one."""
        if self.stopping():
            return None
        if self.pool.wait_for_room(target, 0):
            return False
        while not self.pool.wait_for_room(target, _ROOM_POLL_SECONDS):
            if self.stopping():
                return None
        return None if self.stopping() else True

    def _dispatch(self, work: list[Work]) -> None:
        """One target's work, in order, as one job: a worker holds the target for the
        whole of it (two jobs, the second found the target busy and was deferred, so a
        deletion that kept failing kept a due rotation from ever starting)."""
        target = work[0].target
        if self.wait_for_workers and self._await_room(target) is None:
            return
        if self.pool.submit(target, lambda: [self.execute(item) for item in work][-1]):
            self.touched.add(target)
        else:
            log.debug("work_deferred", target=target, kinds=[w.kind.value for w in work])

    def _forget_manual(self, target: str) -> None:
        with self._lock:
            self._manual.discard(target)

    def execute(self, work: Work) -> Outcome:
        """Do one piece of work on the calling thread (a worker, or a test)."""
        spec = self._spec(work.target)
        manual = work.trigger == Trigger.RUN_ROTATE
        try:
            if work.kind is WorkKind.CLEANUP:
                self.runner.cleanup(spec)
                self.anchor(work.target)
                return self._note(Outcome(work.target, None))
            if work.kind is WorkKind.ROLL_BACK:
                rolled = self.runner.cancel(spec, actor="scheduler", reason=ORPHAN_ROLLBACK)
                if rolled.refused is None or rolled.rotation is None:
                    self.anchor(work.target)
                    ended = rolled.rotation
                    if ended is not None and ended.status is Status.ROLLED_BACK:
                        # Done as meant, not a failed rotation (``--once`` exits 0): the
                        # rolled-back notice and counter still tell of it.
                        log.info("orphan_rolled_back", target=work.target,
                                 rotation_id=ended.rotation_id)
                        ended = None
                    return self._note(Outcome(work.target, ended))
                # Vault may hold its new key after all (a write of an earlier attempt):
                # then it goes forward, as a rotation past its store does.
            report = self.runner.rotate_if(
                spec, None if manual else lambda: self._still_due(work.target),
                trigger=work.trigger, actor=self.actor if manual else "scheduler", wait=False)
        except (LeaseHeld, LeaseLost):
            # Another replica is on it (or took it from us: the runner said so); the next
            # sweep looks again.
            log.debug("target_held_elsewhere", target=work.target)
            return Outcome(work.target, None)
        except RotatorError as exc:
            log.error("target_failed", target=work.target, error=str(exc))
            if manual:
                self._forget_manual(work.target)
            return self._note(Outcome(work.target, None, str(exc)))
        if manual:
            self._forget_manual(work.target)
        rotation = None if report is None else report.rotation
        if rotation is not None:
            self.anchor(work.target)
        if rotation is not None and rotation.step is Step.GRACE and rotation.grace_ends_at:
            self.wake_at(rotation.grace_ends_at)
        return self._note(Outcome(work.target, rotation))

    def _note(self, outcome: Outcome) -> Outcome:
        with self._lock:
            self._outcomes[outcome.target] = outcome
        self._look_again(outcome.target, None)   # its schedule moved: decide it again
        return outcome

    def _spec(self, target: str) -> TargetSpec:
        """A configured target's spec, or the one an orphan's row gave (``_finish_orphans``)."""
        if target in self.schedules:
            return self.specs(target)
        with self._lock:
            return self._orphan_specs[target]

    def _still_due(self, target: str) -> bool:
        schedule = self.schedules.get(target)
        if schedule is None:
            return False   # an orphan: its work is finished, nothing of it starts again
        facts = self.repo.schedule_facts(target)
        return planner.still_due(target, schedule, facts, self.clock.now())

