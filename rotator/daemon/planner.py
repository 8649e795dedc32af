"""What one target needs now, decided from SQL facts, its schedule and the time. No IO.

    a running rotation past its grace (or mid-step)   resume it
    a running rotation in grace                       wake when the grace ends
    queued key deletions                              retry them
    a schedule that is due                            start a rotation
    a schedule due later                              wake then

A target no longer in the config gets the first three only (``decide_in_flight``), and
a rotation of it still before its store is rolled back instead of resumed: its new key
is deleted and Vault, never written, stays as it was, since nothing configured wants a
new key for it any more.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from rotator.core.machine import BEFORE_STORE
from rotator.core.model import Rotation, ScheduleFacts, Step
from rotator.scheduling.schedule import Due, History, Schedule, next_due

__all__ = ["Decision", "Work", "WorkKind", "decide", "decide_in_flight", "history_of"]


class WorkKind(StrEnum):
    RESUME = "resume"
    START = "start"
    CLEANUP = "cleanup"
    ROLL_BACK = "roll_back"     # a target no longer in the config, before its store


@dataclass(frozen=True, slots=True)
class Work:
    target: str
    kind: WorkKind
    trigger: str          # why a START starts: a ``Trigger`` (schedule, ..., run_rotate)


@dataclass(frozen=True, slots=True)
class Decision:
    work: tuple[Work, ...]
    wake_at: datetime | None      # when this target next needs a look (None: no timer)
    due: Due | None               # the schedule's next start, for metrics and status


def history_of(facts: ScheduleFacts) -> History:
    done = facts.last_completed
    return History(
        last_completed_started_at=None if done is None else done.started_at,
        key_since=None if done is None else done.key_stored_at,
        last_failure_at=facts.last_failure_at,
        failures_since_success=facts.failures_since)


def decide_in_flight(target: str, running: Rotation | None, cleanups: int,
                     now: datetime, *, orphan: bool = False) -> Decision:
    """What a target's work in flight needs now, whatever its schedule: also all that a
    target no longer in the config (``orphan``: ``app.orphans``) gets, which never
    starts again, and whose rotation is rolled back while Vault is untouched."""
    if orphan and running is not None and running.step in BEFORE_STORE:
        return Decision((Work(target, WorkKind.ROLL_BACK, "target left the config"),),
                        None, None)
    if running is not None:
        in_grace = (running.step is Step.GRACE and running.grace_ends_at is not None
                    and running.grace_ends_at > now)
        if in_grace:
            return Decision((), running.grace_ends_at, None)
        return Decision((Work(target, WorkKind.RESUME, "resume"),), None, None)
    work = (Work(target, WorkKind.CLEANUP, "cleanup"),) if cleanups else ()
    return Decision(work, None, None)


def decide(target: str, schedule: Schedule, facts: ScheduleFacts, running: Rotation | None,
           cleanups: int, now: datetime) -> Decision:
    if running is not None:
        return decide_in_flight(target, running, cleanups, now)
    work = list(decide_in_flight(target, None, cleanups, now).work)
    due = next_due(schedule, history_of(facts), target=target, now=now)
    if due is not None and due.at <= now:
        work.append(Work(target, WorkKind.START, due.reason))
        return Decision(tuple(work), None, due)
    return Decision(tuple(work), None if due is None else due.at, due)


def still_due(target: str, schedule: Schedule, facts: ScheduleFacts, now: datetime) -> bool:
    """The same question as ``decide`` asks, asked again under the target's lease."""
    due = next_due(schedule, history_of(facts), target=target, now=now)
    return due is not None and due.at <= now
