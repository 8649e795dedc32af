"""Standard 5-field crontab expressions, parsed and evaluated in a time zone; pure.

    minute  0-59        hour  0-23        day of month  1-31 or ``last``
    month   1-12, jan-dec                 day of week   0-7 (0 and 7 are Sunday), sun-sat

Each field is ``*`` or a comma-separated list of ``N``, ``A-B``, ``*/S``, ``A-B/S`` or
``A/S`` (from A to the field's maximum, every S). A rotation schedule restricts the day
of month or the day of week, never both (``schedule.check_cron`` refuses that), so a day
matches when its month, day of month and weekday all do.

Fire times are wall-clock times in the zone. A wall time the clocks skip (02:30 on the
night they go forward) fires at the same distance past the jump (03:30); a wall time the
clocks pass twice (going back) fires on its first pass only: cron names wall times.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

__all__ = ["Cron", "next_fire", "parse_cron"]

_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
# Far enough for any expression that fires at all: 29 February recurs within 8 years.
_HORIZON_DAYS = 8 * 366 + 1


@dataclass(frozen=True, slots=True)
class Cron:
    """A parsed expression: the values each field allows (weekdays 0-6, Sunday 0)."""

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    last_day: bool                 # ``last`` in the day-of-month field
    months: frozenset[int]
    weekdays: frozenset[int]

    def matches(self, day: date) -> bool:
        if day.month not in self.months or (day.isoweekday() % 7) not in self.weekdays:
            return False
        last = calendar.monthrange(day.year, day.month)[1]
        return day.day in self.days or (self.last_day and day.day == last)


def parse_cron(expr: str) -> Cron:
    """``expr`` parsed; ``ValueError`` naming the field and item that is wrong."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields (minute hour day-of-month month day-of-week), "
                         f"got {len(fields)}")
    minute, hour, day, month, weekday = fields
    day_parts = day.lower().split(",")
    day_items = [item for item in day_parts if item != "last"]
    return Cron(
        minutes=tuple(sorted(_field(minute, "minute", 0, 59))),
        hours=tuple(sorted(_field(hour, "hour", 0, 23))),
        days=frozenset(_field(",".join(day_items), "day", 1, 31)) if day_items else frozenset(),
        last_day=len(day_items) < len(day_parts),
        months=frozenset(_field(month, "month", 1, 12, names=_MONTHS, first_name=1)),
        weekdays=frozenset(n % 7 for n in _weekdays(weekday)),
    )


def next_fire(cron: Cron, zone: ZoneInfo, at_or_after: datetime) -> datetime | None:
    """The first fire time (UTC) at or after ``at_or_after``; ``None`` if it never fires."""
    start = at_or_after.astimezone(UTC)
    wall = start.astimezone(zone).replace(tzinfo=None, fold=0)
    if wall.second or wall.microsecond:
        wall = wall.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for offset in range(_HORIZON_DAYS):
        day = wall.date() + timedelta(days=offset)
        if not cron.matches(day):
            continue
        for hour in cron.hours:
            for minute in cron.minutes:
                local = datetime.combine(day, time(hour, minute))
                if local < wall:
                    continue
                # fold=0: a skipped wall time lands past the jump, a repeated one on its
                # first pass; a first pass already behind ``start`` is not fired again.
                fire = local.replace(tzinfo=zone).astimezone(UTC)
                if fire >= start:
                    return fire
    return None


def _field(text: str, name: str, low: int, high: int, *, names: tuple[str, ...] = (),
           first_name: int = 0) -> set[int]:
    chosen: set[int] = set()
    for item in text.lower().split(","):
        span, slash, step_text = item.partition("/")
        if slash and not (step_text.isdigit() and int(step_text) > 0):
            raise ValueError(f"Unrecognized expression {item!r} for field {name!r}: "
                             "the step must be a positive number")
        step = int(step_text) if slash else 1
        if span == "*":
            first, last = low, high
        else:
            head, dash, tail = span.partition("-")
            first = _value(head, item, name, low, high, names, first_name)
            last = (_value(tail, item, name, low, high, names, first_name) if dash
                    else high if slash else first)
            if first > last:
                raise ValueError(f"invalid {name} range {item!r}: {first} is after {last}")
        # A step that can never be taken is a typo ("*/60" for minutes). The reach is
        # measured as the scheduler this replaced measured it (a range ending at 0 reaches
        # the field's maximum), so every expression it accepted is accepted still.
        reach = min(high - low, (last if span != "*" and last else high) - first)
        if slash and step > reach:
            raise ValueError(f"the step {step} in {item!r} is larger than its range ({reach})")
        chosen.update(range(first, last + 1, step))
    return chosen


def _value(text: str, item: str, name: str, low: int, high: int, names: tuple[str, ...],
           first_name: int) -> int:
    if text in names:
        return names.index(text) + first_name
    if not text.isdigit():
        raise ValueError(f"Unrecognized expression {item!r} for field {name!r}")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{name} value {value} in {item!r} is outside {low}-{high}")
    return value


def _weekdays(text: str) -> set[int]:
    """A day-of-week field as numbers 0-7; Sunday closing a range counts as 7, as in crontab."""
    chosen: set[int] = set()
    for item in text.lower().split(","):
        span, slash, step_text = item.partition("/")
        if slash and not (step_text.isdigit() and int(step_text) > 0):
            raise ValueError(f"invalid day-of-week step in {item!r}")
        step = int(step_text) if slash else 1
        head, dash, tail = span.partition("-")
        if span == "*":
            first, last = 0, 6
        else:
            first = _weekday(head, end=False)
            last = _weekday(tail, end=True) if dash else (6 if slash else first)
        if first > last:
            raise ValueError(f"invalid day-of-week range {item!r}")
        chosen.update(range(first, last + 1, step))
    return chosen


def _weekday(text: str, *, end: bool) -> int:
    if text.isdigit() and int(text) <= 7:
        return int(text)
    if text in _DAYS:
        return 7 if end and text == "sun" else _DAYS.index(text)
    raise ValueError(f"invalid day of week {text!r}: use 0-7 or sun-sat")
