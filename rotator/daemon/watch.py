"""The conditions a sweep notices without any state change: stuck, overdue, a key too old.

``conditions`` is pure: from what the sweep already read for a target (its schedule, its
``ScheduleFacts``, its running rotation) and the time, the notices that hold now. Each
has a dedupe key naming the condition and the rotation or key it is about, so a
condition seen on every sweep is delivered once, and again only for the next rotation
or key. ``Watch`` enqueues them, skipping keys this process already wrote.

    rotation_stuck   a running rotation in one step longer than ``stuck_after``: counted
                     from its start (plan to store take seconds) or, once a grace window
                     was set, from the window's end (grace, revoke)
    target_overdue   the schedule's base time (failures' back-off not counted) passed more
                     than ``overdue_after`` ago with no completed rotation since
    key_too_old      the key Vault serves is older than ``max_key_age`` and no rotation
                     is running to replace it (the forced one failed, or none could start)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime

import structlog
from sqlalchemy.exc import SQLAlchemyError

from rotator.core.durations import format_duration
from rotator.core.model import Rotation, ScheduleFacts, Step
from rotator.core.notices import Notice, NoticeEvent
from rotator.daemon.planner import history_of
from rotator.scheduling.schedule import Schedule, next_due

__all__ = ["Thresholds", "Watch", "conditions"]

log = structlog.get_logger("rotator.notify")

# Dedupe keys this process remembers having enqueued; past it, it starts over (the
# database's unique index still makes a repeat a no-op).
_SEEN_MAX = 10_000


@dataclass(frozen=True, slots=True)
class Thresholds:
    stuck_after: float
    overdue_after: float


def conditions(target: str, schedule: Schedule, facts: ScheduleFacts,
               running: Rotation | None, now: datetime, limits: Thresholds) -> list[Notice]:
    notices: list[Notice] = []
    if running is not None:
        stuck = _stuck(running, now, limits.stuck_after)
        if stuck is not None:
            notices.append(stuck)
    done = facts.last_completed
    # Counted from the schedule's own time: the back-off after failures is what makes a
    # target late, not an excuse for it. A target never rotated is due now, never late.
    base = replace(history_of(facts), last_failure_at=None, failures_since_success=0)
    due = None if done is None else next_due(schedule, base, target=target, now=now)
    if done is not None and due is not None \
            and (now - due.at).total_seconds() > limits.overdue_after:
        event = NoticeEvent.TARGET_OVERDUE
        late = format_duration((now - due.at).total_seconds())
        notices.append(Notice(
            event, target, f"{event}:{target}:{done.rotation_id}",
            f"{target} is overdue: its rotation was due {late} ago ({due.reason})", now,
            done.rotation_id,
            {"due_at": due.at.isoformat(), "failures_since_success": facts.failures_since}))
    key_since = None if done is None else done.key_stored_at
    if (running is None and done is not None and key_since is not None
            and schedule.max_key_age is not None
            and (now - key_since).total_seconds() > schedule.max_key_age):
        event = NoticeEvent.KEY_TOO_OLD
        age = (now - key_since).total_seconds()
        notices.append(Notice(
            event, target, f"{event}:{target}:{done.new_key_id}",
            f"the key of {target} is {format_duration(age)} old, past max_key_age "
            f"{format_duration(schedule.max_key_age)}", now, done.rotation_id,
            {"key_id": done.new_key_id, "age_seconds": round(age),
             "max_key_age_seconds": schedule.max_key_age}))
    return notices


def _stuck(rotation: Rotation, now: datetime, after: float) -> Notice | None:
    since = rotation.grace_ends_at or rotation.started_at
    if rotation.step is Step.GRACE and rotation.grace_ends_at is None:
        return None
    waited = (now - since).total_seconds()
    if waited <= after:
        return None
    event = NoticeEvent.ROTATION_STUCK
    return Notice(
        event, rotation.target, f"{event}:{rotation.rotation_id}:{rotation.step}",
        f"rotation of {rotation.target} stuck at step {rotation.step} for "
        f"{format_duration(waited)}", now, rotation.rotation_id,
        {"step": str(rotation.step), "since": since.isoformat(),
         "rollback_blocked": rotation.rollback_blocked})


@dataclass
class Watch:
    """Enqueues the sweep's conditions through ``enqueue`` (the outbox's)."""

    enqueue: Callable[[Iterable[Notice], datetime], int]
    limits: Thresholds
    _seen: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, target: str, schedule: Schedule, facts: ScheduleFacts,
                 running: Rotation | None, now: datetime) -> None:
        found = conditions(target, schedule, facts, running, now, self.limits)
        with self._lock:
            new = [n for n in found if n.dedupe_key not in self._seen]
        if not new:
            return
        try:
            self.enqueue(new, now)
        except SQLAlchemyError as exc:
            log.warning("notice_not_enqueued", target=target, error=type(exc).__name__)
            return      # the next sweep finds the condition again
        with self._lock:
            if len(self._seen) > _SEEN_MAX:
                self._seen.clear()
            self._seen.update(n.dedupe_key for n in new)
