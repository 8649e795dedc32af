"""When a target's next rotation is due: pure maths, no IO, no clock reads.

``next_due(schedule, history, target=..., now=...)`` turns a target's ``Schedule`` (from
config) and its ``History`` (from SQL, the source of truth) into a ``Due`` time, or None
when nothing will ever make it due. Every datetime in and out is timezone-aware; results
are UTC. The rules, in order:

1. ``enabled=False`` gives None; so does a schedule with no ``every``, no ``cron`` and no
   ``max_key_age`` (manual rotations only).
2. Base time. The anchor is the start of the latest completed rotation.
   ``every``: anchor + every. ``cron``: the first fire time strictly after the anchor,
   evaluated in ``timezone``. A wall-clock time that occurs twice when the clocks go back
   fires once (the first time); one skipped when they go forward fires at the instant the
   skipped wall time maps to (02:30 becomes 03:30). Without an anchor (never rotated) the
   base is ``now``, for ``cron`` too, with reason ``first_rotation``: a key of unknown age
   is rotated so every key has a known age. (Waiting for the first fire at or after
   ``now`` would never come due: each sweep just after a fire would find the next one.)
3. Jitter: a deterministic delay in ``[0, jitter)`` from sha256 of ``target|anchor``, so
   restarts agree and targets on the same schedule spread out. A first rotation (no
   anchor) is not jittered: "now + jitter" would recede with every look and never come due.
4. Window: a base outside ``window`` (local time in ``timezone``) moves to the next
   window opening; a nonexistent opening (DST) maps as zoneinfo maps it (fold=0).
5. ``max_key_age``: forced = (key_since or anchor) + max_key_age, or ``now`` when both are
   unknown. A forced time earlier than the base wins, with reason ``max_key_age``; it
   ignores window and jitter because it is a compliance limit.
6. Failure back-off: after ``n`` failed or rolled-back attempts since the last success,
   the result is not before last_failure_at + min(retry_failed_after * 2**(n-1), 24h), so
   a poisoned target is not retried in a tight loop. The reason is kept.
7. The result may be in the past (overdue); the caller rotates when ``now >= due.at``.

Cron expressions are standard 5-field crontab (``cron.py``): day-of-week 0 and 7 are
Sunday, and restricting both day-of-month and day-of-week is refused (crontab ORs them,
other schedulers AND them, and either reading surprises someone).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rotator.scheduling.cron import Cron, next_fire, parse_cron

__all__ = [
    "Due",
    "History",
    "Reason",
    "Schedule",
    "Window",
    "check_cron",
    "check_timezone",
    "next_due",
    "parse_window",
]

Reason = Literal["schedule", "first_rotation", "max_key_age"]

# The back-off never exceeds a day: a fixed target must not wait longer than that.
_MAX_BACKOFF = 86400.0
_TICK = timedelta(microseconds=1)
_WINDOW = re.compile(r"^\s*([01]\d|2[0-3]):([0-5]\d)\s*-\s*([01]\d|2[0-3]):([0-5]\d)\s*$")
# Any time will do: an expression without a year field that fires once fires forever.
_PROBE = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Window:
    """Rotations start only between these local wall-clock times; end < start spans midnight."""

    start: time
    end: time

    def __post_init__(self) -> None:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("window times are wall-clock times and take no time zone")
        if self.start == self.end:
            raise ValueError(f"window start and end must differ, got {self.start} twice")

    def contains(self, local: datetime) -> bool:
        """Whether ``local``'s wall-clock time is in ``[start, end)``; its tzinfo is ignored."""
        t = local.time()
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end


def parse_window(text: str) -> Window:
    """A ``Window`` from ``"02:00-05:00"`` (24-hour ``HH:MM-HH:MM``)."""
    match = _WINDOW.match(text)
    if match is None:
        raise ValueError(
            f"invalid window {text!r}: expected 'HH:MM-HH:MM' (24-hour), e.g. '02:00-05:00'"
        )
    sh, sm, eh, em = (int(g) for g in match.groups())
    if (sh, sm) == (eh, em):
        raise ValueError(f"invalid window {text!r}: start and end are the same time")
    return Window(time(sh, sm), time(eh, em))


def check_timezone(name: str) -> ZoneInfo:
    """The IANA time zone called ``name``; ``ValueError`` if there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # ZoneInfo refuses malformed keys with ValueError and directories with OSError.
        raise ValueError(f"unknown time zone {name!r}") from None


def check_cron(expr: str, timezone: str) -> None:
    """``ValueError`` unless ``expr`` is a valid 5-field crontab that fires in ``timezone``."""
    zone = check_timezone(timezone)
    if next_fire(_cron(expr), zone, _PROBE) is None:
        raise ValueError(f"cron expression {expr!r} never fires")


@dataclass(frozen=True, slots=True)
class Schedule:
    """A target's rotation policy; durations are seconds."""

    every: float | None = None
    cron: str | None = None              # 5-field crontab, evaluated in ``timezone``
    timezone: str = "UTC"                # IANA name; applies to cron and window
    window: Window | None = None
    jitter: float = 0.0
    max_key_age: float | None = None     # forces a rotation when the key is older
    retry_failed_after: float = 3600.0   # first back-off after a failed attempt
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.every is not None and self.cron is not None:
            raise ValueError("a schedule takes 'every' or 'cron', not both")
        if self.every is not None and not (math.isfinite(self.every) and self.every > 0):
            raise ValueError(f"'every' must be a positive number of seconds, got {self.every}")
        if self.max_key_age is not None and not (
            math.isfinite(self.max_key_age) and self.max_key_age > 0
        ):
            raise ValueError(f"'max_key_age' must be positive, got {self.max_key_age}")
        if not (math.isfinite(self.jitter) and self.jitter >= 0):
            raise ValueError(f"'jitter' must not be negative, got {self.jitter}")
        if not (math.isfinite(self.retry_failed_after) and self.retry_failed_after >= 0):
            raise ValueError(
                f"'retry_failed_after' must not be negative, got {self.retry_failed_after}"
            )
        check_timezone(self.timezone)
        if self.cron is not None:
            check_cron(self.cron, self.timezone)


@dataclass(frozen=True, slots=True)
class History:
    """What SQL says about a target; the daemon builds it."""

    last_completed_started_at: datetime | None = None  # the schedule's anchor
    key_since: datetime | None = None                  # when the current key reached Vault
    last_failure_at: datetime | None = None            # latest failure after that completion
    failures_since_success: int = 0


@dataclass(frozen=True, slots=True)
class Due:
    at: datetime  # timezone-aware UTC
    reason: Reason


def next_due(schedule: Schedule, history: History, *, target: str, now: datetime) -> Due | None:
    """When ``target`` is next due (see the module docstring), or None if never."""
    now = _utc("now", now)
    anchor = _utc_or_none("last_completed_started_at", history.last_completed_started_at)
    key_since = _utc_or_none("key_since", history.key_since)
    last_failure = _utc_or_none("last_failure_at", history.last_failure_at)
    if not schedule.enabled:
        return None
    due = _scheduled(schedule, anchor, target=target, now=now)
    if schedule.max_key_age is not None:
        since = key_since or anchor
        forced = now if since is None else since + timedelta(seconds=schedule.max_key_age)
        if due is None or forced < due.at:
            due = Due(forced, "max_key_age")
    if due is None:
        return None
    failures = history.failures_since_success
    if failures > 0 and last_failure is not None:
        # Capping the exponent keeps the float finite; the day cap applies long before.
        backoff = schedule.retry_failed_after * 2.0 ** min(failures - 1, 1000)
        not_before = last_failure + timedelta(seconds=min(backoff, _MAX_BACKOFF))
        if not_before > due.at:
            due = Due(not_before, due.reason)
    return due


def _scheduled(
    schedule: Schedule, anchor: datetime | None, *, target: str, now: datetime
) -> Due | None:
    """Rules 2 to 4: the every/cron base, jittered, then moved into the window."""
    zone = check_timezone(schedule.timezone)
    base: datetime | None
    if schedule.every is None and schedule.cron is None:
        return None
    if anchor is None:
        # For cron too, not "the first fire at or after now": a sweep arriving just after
        # a fire time would find the next one, for ever.
        base = now
    elif schedule.every is not None:
        base = anchor + timedelta(seconds=schedule.every)
    else:
        assert schedule.cron is not None
        # Strictly after the anchor: a rotation started exactly on a fire time is not
        # due again at once.
        base = next_fire(_cron(schedule.cron), zone, anchor + _TICK)
    if base is None:
        return None
    if anchor is not None:
        # A first rotation is not jittered: with no anchor, "now + jitter" would recede
        # with every sweep and never come due.
        base += _jitter(target, anchor, schedule.jitter)
    if schedule.window is not None:
        base = _into_window(base, schedule.window, zone)
    return Due(base, "first_rotation" if anchor is None else "schedule")


def _jitter(target: str, anchor: datetime | None, jitter: float) -> timedelta:
    # Whole microseconds, rounded down, so the offset stays below jitter after timedelta's
    # own rounding.
    span = math.floor(jitter * 1_000_000)
    if span <= 0:
        return timedelta(0)
    seed = f"{target}|{anchor.isoformat() if anchor is not None else 'never'}"
    digest = hashlib.sha256(seed.encode()).digest()
    return timedelta(microseconds=int.from_bytes(digest[:8], "big") % span)


def _into_window(at: datetime, window: Window, zone: ZoneInfo) -> datetime:
    local = at.astimezone(zone)
    if window.contains(local):
        return at
    opening = _local(local.date(), window.start, zone)
    if opening <= at:
        opening = _local(local.date() + timedelta(days=1), window.start, zone)
    return opening


def _local(day: date, wall: time, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, wall, tzinfo=zone).astimezone(UTC)


def _cron(expr: str) -> Cron:
    if len(expr.split()) == 5:
        _, _, day, _, weekday = expr.split()
        if not day.startswith("*") and not weekday.startswith("*"):
            raise ValueError(f"invalid cron expression {expr!r}: "
                             "restrict day-of-month or day-of-week, not both")
    try:
        return parse_cron(expr)
    except ValueError as exc:
        raise ValueError(f"invalid cron expression {expr!r}: {exc}") from None


def _utc(name: str, value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(UTC)


def _utc_or_none(name: str, value: datetime | None) -> datetime | None:
    return None if value is None else _utc(name, value)
