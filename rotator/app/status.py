"""``rotator status``: each target's key as Vault serves it, the key retiring, the results.

Everything comes from SQL (the rotation state and the audit trail), never from Vault or
the provider, and never a secret: the key Vault serves is the one the last store step
wrote, known from the rotation that wrote it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from rotator.core.model import Rotation, Status, Step, StoredEvent
from rotator.core.ports import RotationReader
from rotator.core.vocabulary import AuditAction, AuditResult, EventKind

__all__ = ["TargetStatus", "ending_results", "status"]

# The steps after the store: Vault serves the rotation's new key, the old one retires.
_STORED = frozenset({Step.GRACE, Step.REVOKE})
_ENDINGS = frozenset({AuditAction.COMPLETED, AuditAction.ROLLED_BACK, AuditAction.FAILED})
_FAR_PAST = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class TargetStatus:
    target: str
    current_key_id: str | None        # the key Vault serves, by the rotations that wrote it
    key_since: datetime | None        # when it went into Vault
    retiring_key_id: str | None       # the previous key, still live
    retiring_at: datetime | None      # when its deletion is due (None: overdue, queued)
    in_flight: Rotation | None
    last: Rotation | None             # the latest rotation that ended, whatever its status
    last_result: str | None           # how its trail ends it (``completed_pending_cleanup``)
    pending_cleanups: int
    # The probes that found an old key still authenticating after its deletion: the last
    # probe of its rotation said so (``rotator verify`` probes it again).
    revoked_alive: tuple[StoredEvent, ...] = ()
    # The last rotation was refused, having changed nothing: what to do (``next_step``).
    next_step: str | None = None
    # The in-flight rotation: since when it has sat in its step, and why (its grace
    # deadline, its blocked rollback, or the last thing its trail recorded).
    step_since: datetime | None = None
    step_why: str | None = None

    @property
    def old_key_pending(self) -> bool:
        """The last rotation completed but could not delete the old key: it still lives."""
        return (self.last_result == AuditResult.COMPLETED_PENDING_CLEANUP
                and self.retiring_key_id is not None and self.in_flight is None)


def ending_results(events: Iterable[StoredEvent]) -> dict[str, str]:
    """Rotation id -> the result its ending note records."""
    return {e.rotation_id: e.result or e.action for e in events
            if e.kind is EventKind.NOTE and e.action in _ENDINGS}


def status(reader: RotationReader, targets: Iterable[str],
           advise: Callable[[Rotation], str | None] | None = None) -> list[TargetStatus]:
    """Each target's served key and its age, the key retiring, the in-flight rotation,
    the last ended result, queued deletions, and the old keys recorded as still
    authenticating after their deletion; ``advise``: what to do about a last rotation
    (``next_step.refusal_next_step``), when nothing is in flight."""
    running = {r.target: r for r in reader.all_running()}
    cleanups = reader.all_pending_cleanups()
    found = [_one(reader, name, running.get(name),
                  [c.key_id for c in cleanups if c.target == name]) for name in targets]
    if advise is None:
        return found
    return [replace(s, next_step=advise(s.last)) if s.last and not s.in_flight else s
            for s in found]


def _one(reader: RotationReader, name: str, flight: Rotation | None,
         queued: list[str]) -> TargetStatus:
    events = reader.events(target=name)
    ended = [r for r in reader.rotations(name) if r.is_terminal]
    last = max(ended, key=lambda r: (r.finished_at or _FAR_PAST, r.started_at), default=None)
    done = max((r for r in ended if r.status is Status.COMPLETED),
               key=lambda r: (r.finished_at or _FAR_PAST, r.started_at), default=None)
    last_result = None if last is None else ending_results(events).get(
        last.rotation_id, last.status.value)
    current, since = (done.new_key_id, done.key_stored_at) if done else (None, None)
    retiring, due = None, None
    if flight is not None and flight.step in _STORED and flight.grace_ends_at is not None:
        current, retiring, due = flight.new_key_id, flight.old_key_id, flight.grace_ends_at
        since = flight.grace_ends_at - timedelta(seconds=flight.grace_seconds)
    elif flight is not None and current is None:
        current = flight.old_key_id       # the key its plan found in Vault
    elif (last is not None and last_result == AuditResult.COMPLETED_PENDING_CLEANUP
          and last.old_key_id in queued):
        retiring = last.old_key_id
    step_since, step_why = (None, None) if flight is None else _in_step(flight, events)
    return TargetStatus(
        target=name, current_key_id=current, key_since=since, retiring_key_id=retiring,
        retiring_at=due, in_flight=flight, last=last, last_result=last_result,
        pending_cleanups=len(queued), revoked_alive=_revoked_alive(events),
        step_since=step_since, step_why=step_why)


def _in_step(flight: Rotation, events: Iterable[StoredEvent]) -> tuple[datetime, str]:
    """Since when ``flight`` has been in its step, and why it is still there.

    A step is entered right after the last row of the step before it (rows carry the
    step they were written at); the grace window's start is exact, from its deadline.
    """
    own = [e for e in events if e.rotation_id == flight.rotation_id]
    here = [e for e in own if e.step == flight.step.value]
    if flight.step is Step.GRACE and flight.grace_ends_at is not None:
        since = flight.grace_ends_at - timedelta(seconds=flight.grace_seconds)
        return since, f"waiting for the grace window to end at {_at(flight.grace_ends_at)}"
    since = here[0].at if here else own[-1].at if own else flight.started_at
    if flight.step is Step.ROLLBACK and flight.rollback_blocked:
        return since, f"rollback blocked, retried on every run: {flight.rollback_blocked}"
    if not own:
        return since, "nothing recorded yet"
    last = own[-1]
    if last.kind is EventKind.INTENT:
        return since, (f"{last.action} started at {_at(last.at)}, its outcome not recorded: "
                       "the process driving it may have stopped (the next run resumes it)")
    said = f": {last.detail}" if last.detail else ""
    if last.result == AuditResult.ERROR:
        return since, f"retrying after {last.action} failed at {_at(last.at)}{said}"
    result = f" {last.result}" if last.result else ""
    return since, f"last: {last.action}{result} at {_at(last.at)}{said}"


def _at(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def _revoked_alive(events: Iterable[StoredEvent]) -> tuple[StoredEvent, ...]:
    last_probe: dict[str, StoredEvent] = {}     # rotation id -> its latest probe_revoked
    for event in events:
        if event.action == AuditAction.PROBE_REVOKED:
            last_probe[event.rotation_id] = event
    return tuple(e for e in last_probe.values() if e.result == AuditResult.STILL_VALID)
