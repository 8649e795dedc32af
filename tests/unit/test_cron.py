"""The crontab evaluator agrees with the one it replaced (APScheduler 3's CronTrigger).

Until this module, cron maths went through APScheduler's CronTrigger with crontab weekdays
translated in and a repeated wall time skipped on its second pass. That implementation is
kept here as the oracle, and hypothesis compares the two over random expressions, zones
with daylight saving (a half-hour one among them) and instants across several years.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger
from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.scheduling.cron import Cron, next_fire, parse_cron

_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_TICK = timedelta(microseconds=1)
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]


def _apscheduler_weekdays(field: str) -> str:
    if field == "*":
        return field
    chosen: set[int] = set()
    for item in field.split(","):
        span, slash, step = item.partition("/")
        first, dash, last = span.partition("-")
        if span == "*":
            low, high = 0, 6
        else:
            low = int(first)
            high = int(last) if dash else (6 if slash else low)
        chosen.update(n % 7 for n in range(low, high + 1, int(step) if slash else 1))
    return ",".join(_DAYS[n] for n in sorted(chosen))


def oracle(expr: str, zone: ZoneInfo, at_or_after: datetime) -> datetime | None:
    minute, hour, day, month, weekday = expr.split()
    trigger = CronTrigger.from_crontab(
        f"{minute} {hour} {day} {month} {_apscheduler_weekdays(weekday)}", timezone=zone)
    local = trigger.get_next_fire_time(None, at_or_after)
    fire = None if local is None else local.astimezone(UTC)
    while fire is not None and fire.astimezone(zone).fold == 1:
        local = trigger.get_next_fire_time(None, fire + _TICK)
        fire = None if local is None else local.astimezone(UTC)
    return fire


def _is_fire(cron: Cron, zone: ZoneInfo, fire: datetime) -> bool:
    """Some wall time ``cron`` names lands on ``fire`` (a skipped one past the jump)."""
    local = fire.astimezone(zone).replace(tzinfo=None)
    for back in (0, 30, 60):
        wall = local - timedelta(minutes=back)
        lands = wall.replace(tzinfo=zone).astimezone(UTC) == fire
        if lands and cron.matches(wall.date()) and wall.hour in cron.hours \
                and wall.minute in cron.minutes:
            return True
    return False


def _item(low: int, high: int) -> st.SearchStrategy[str]:
    value = st.integers(low, high)
    pairs = st.tuples(value, value).map(sorted)
    return st.one_of(
        value.map(str),
        pairs.map(lambda p: f"{p[0]}-{p[1]}"),
        st.integers(1, high - low + 1).map(lambda s: f"*/{s}"),
        st.tuples(pairs, st.integers(1, 7)).map(lambda t: f"{t[0][0]}-{t[0][1]}/{t[1]}"),
    )


def _field(low: int, high: int) -> st.SearchStrategy[str]:
    return st.one_of(st.just("*"),
                     st.lists(_item(low, high), min_size=1, max_size=3).map(",".join))


@st.composite
def expressions(draw: st.DrawFn) -> str:
    minute, hour, month = draw(_field(0, 59)), draw(_field(0, 23)), draw(_field(1, 12))
    if draw(st.booleans()):
        day, weekday = draw(_field(1, 28)), "*"
    else:
        day, weekday = "*", draw(_field(0, 6))
    return f"{minute} {hour} {day} {month} {weekday}"


instants = st.datetimes(min_value=datetime(2023, 1, 1), max_value=datetime(2027, 12, 31),
                        timezones=st.just(UTC))


@settings(max_examples=300, deadline=None)
@given(expressions(), st.sampled_from(ZONES), instants)
def test_next_fire_agrees_with_apscheduler(expr: str, zone_name: str, at: datetime) -> None:
    zone = ZoneInfo(zone_name)
    try:
        expected = oracle(expr, zone, at)
    except ValueError:
        # What APScheduler refused (a step longer than its range) is refused still.
        with pytest.raises(ValueError, match="step"):
            parse_cron(expr)
        return
    _assert_agrees(parse_cron(expr), zone, at, expected)


def _assert_agrees(cron: Cron, zone: ZoneInfo, at: datetime,
                   expected: datetime | None) -> datetime | None:
    ours = next_fire(cron, zone, at)
    if ours == expected:
        return ours
    # APScheduler 3 sometimes keeps the UTC offset of its start when it jumps across a
    # daylight-saving change, and then skips the first fire after it (Lord Howe, months
    # ahead), and it skips some wall times the clocks jump over that its own daily
    # expressions keep. Where the two differ, ours is a real fire time by the documented
    # rule, earlier than its, with a change of offset between the start and the fire.
    assert ours is not None and expected is not None and at <= ours < expected, (cron, at)
    assert _is_fire(cron, zone, ours), (cron, ours)
    assert at.astimezone(zone).utcoffset() != ours.astimezone(zone).utcoffset(), (cron, at)
    return ours


@pytest.mark.parametrize("zone_name", ["Europe/Berlin", "America/New_York",
                                       "Australia/Lord_Howe"])
@pytest.mark.parametrize("expr", ["*/20 0-4 * * *", "30 2 * * *", "0,30 1-3 * * *",
                                  "45 2 * * 0"])
def test_every_fire_through_a_year_of_transitions_agrees(expr: str, zone_name: str) -> None:
    zone, at = ZoneInfo(zone_name), datetime(2024, 1, 1, tzinfo=UTC)
    cron, fires = parse_cron(expr), 0
    while at < datetime(2025, 1, 1, tzinfo=UTC):
        ours = _assert_agrees(cron, zone, at, oracle(expr, zone, at))
        assert ours is not None
        # Around the transitions step by hours, elsewhere jump to the next fire.
        at = ours + _TICK if fires % 50 else at + timedelta(hours=1)
        fires += 1


def test_last_day_of_the_month_and_names() -> None:
    cron = parse_cron("0 3 last feb,mar *")
    at = datetime(2024, 1, 15, tzinfo=UTC)
    assert next_fire(cron, ZoneInfo("UTC"), at) == datetime(2024, 2, 29, 3, tzinfo=UTC)
    assert next_fire(parse_cron("0 3 30 2 *"), ZoneInfo("UTC"), at) is None
