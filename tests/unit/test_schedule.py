"""Due-time maths on a clock the tests control: every product rule with exact times."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.scheduling import schedule as sched
from rotator.scheduling.schedule import (
    Due,
    History,
    Schedule,
    Window,
    check_cron,
    check_timezone,
    next_due,
    parse_window,
)

HOUR = 3600.0
DAY = 86400.0
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def due(schedule: Schedule, history: History | None = None, *, target: str = "t",
        now: datetime = NOW) -> Due | None:
    return next_due(schedule, history or History(), target=target, now=now)


def after(anchor: datetime) -> History:
    return History(last_completed_started_at=anchor)


def test_public_api() -> None:
    assert sorted(sched.__all__) == ["Due", "History", "Reason", "Schedule", "Window",
                                     "check_cron", "check_timezone", "next_due", "parse_window"]


# --- every -------------------------------------------------------------------------------

def test_every_counts_from_the_last_completed_start() -> None:
    assert due(Schedule(every=DAY), after(utc(2024, 5, 1, 10))) == Due(utc(2024, 5, 2, 10),
                                                                       "schedule")


def test_every_without_history_is_due_now_as_first_rotation() -> None:
    assert due(Schedule(every=DAY)) == Due(NOW, "first_rotation")


def test_overdue_result_is_in_the_past() -> None:
    result = due(Schedule(every=HOUR), after(utc(2024, 4, 1)))
    assert result == Due(utc(2024, 4, 1, 1), "schedule")
    assert result.at < NOW


def test_aware_non_utc_input_gives_utc_output() -> None:
    plus2 = timezone(timedelta(hours=2))
    result = due(Schedule(every=HOUR), after(datetime(2024, 5, 1, 12, tzinfo=plus2)))
    assert result is not None and result.at.tzinfo is UTC
    assert result.at == utc(2024, 5, 1, 11)


# --- cron --------------------------------------------------------------------------------

@pytest.mark.parametrize(("anchor", "expected"), [
    (utc(2024, 7, 3, 12), utc(2024, 7, 8, 1)),   # summer: 03:00 CEST is 01:00 UTC
    (utc(2024, 1, 3, 12), utc(2024, 1, 8, 2)),   # winter: 03:00 CET is 02:00 UTC
])
def test_cron_is_evaluated_in_its_time_zone(anchor: datetime, expected: datetime) -> None:
    s = Schedule(cron="0 3 * * MON", timezone="Europe/Berlin")
    assert due(s, after(anchor)) == Due(expected, "schedule")


@pytest.mark.parametrize(("anchor", "expected", "gap"), [
    # The week the clocks go forward (31 March) is an hour short...
    (utc(2024, 3, 25, 2), utc(2024, 4, 1, 1), timedelta(days=7, hours=-1)),
    # ...and the week they go back (27 October) an hour long.
    (utc(2024, 10, 21, 1), utc(2024, 10, 28, 2), timedelta(days=7, hours=1)),
])
def test_cron_across_a_dst_transition_keeps_local_time(
    anchor: datetime, expected: datetime, gap: timedelta
) -> None:
    result = due(Schedule(cron="0 3 * * MON", timezone="Europe/Berlin"), after(anchor))
    assert result == Due(expected, "schedule")
    assert result.at - anchor == gap


def test_cron_is_strictly_after_an_anchor_on_a_fire_time() -> None:
    s = Schedule(cron="0 3 * * *")
    assert due(s, after(utc(2024, 5, 1, 3))) == Due(utc(2024, 5, 2, 3), "schedule")
    just_before = utc(2024, 5, 1, 3) - timedelta(microseconds=1)
    assert due(s, after(just_before)) == Due(utc(2024, 5, 1, 3), "schedule")


def test_cron_first_rotation_is_due_now_within_the_window() -> None:
    # Not the first fire at or after now: a sweep just after a fire would find the next.
    assert due(Schedule(cron="0 3 * * *")) == Due(NOW, "first_rotation")
    s = Schedule(cron="0 3 * * MON", timezone="Europe/Berlin", window=NIGHT)
    assert due(s) == Due(utc(2024, 5, 2, 0), "first_rotation")  # 02:00 CEST


def test_cron_wall_time_repeated_when_clocks_go_back_fires_once() -> None:
    s = Schedule(cron="30 2 * * *", timezone="Europe/Berlin")
    # 02:30 CEST on 27 October; 02:30 CET an hour later is the same wall time again.
    assert due(s, after(utc(2024, 10, 27, 0, 30))) == Due(utc(2024, 10, 28, 1, 30), "schedule")


def test_cron_wall_time_skipped_when_clocks_go_forward_still_fires() -> None:
    s = Schedule(cron="30 2 * * *", timezone="Europe/Berlin")
    # 02:30 does not exist on 31 March; it fires at 03:30 CEST, 01:30 UTC.
    assert due(s, after(utc(2024, 3, 30, 1, 30))) == Due(utc(2024, 3, 31, 1, 30), "schedule")


@pytest.mark.parametrize(("weekday", "expected_day"), [
    ("0", 7), ("7", 7), ("SUN", 7), ("6", 6), ("1-5", 2), ("sat-sun", 6), ("5-7", 5),
])
def test_cron_weekdays_count_like_crontab_not_apscheduler(weekday: str, expected_day: int) -> None:
    # Monday 1 January 2024 at noon: APScheduler 3 alone would read "0" as Monday.
    s = Schedule(cron=f"0 3 * * {weekday}")
    assert due(s, after(utc(2024, 1, 1, 12))) == Due(utc(2024, 1, expected_day, 3), "schedule")


def test_cron_weekday_step_starts_on_sunday() -> None:
    s = Schedule(cron="0 3 * * */2")  # Sunday, Tuesday, Thursday, Saturday
    fires, anchor = [], utc(2024, 1, 1, 12)
    for _ in range(5):
        result = due(s, after(anchor))
        assert result is not None
        fires.append(result.at.day)
        anchor = result.at
    assert fires == [2, 4, 6, 7, 9]


# --- window ------------------------------------------------------------------------------

NIGHT = parse_window("02:00-05:00")


@pytest.mark.parametrize(("base", "expected"), [
    (utc(2024, 5, 1, 0, 30), utc(2024, 5, 1, 2)),   # before: later the same day
    (utc(2024, 5, 1, 3, 15), utc(2024, 5, 1, 3, 15)),  # inside: kept
    (utc(2024, 5, 1, 5), utc(2024, 5, 2, 2)),       # end is exclusive: next day
    (utc(2024, 5, 1, 18), utc(2024, 5, 2, 2)),      # after: next day
])
def test_window_moves_a_base_outside_it_to_the_next_opening(
    base: datetime, expected: datetime
) -> None:
    s = Schedule(every=HOUR, window=NIGHT)
    assert due(s, after(base - timedelta(hours=1))) == Due(expected, "schedule")


@pytest.mark.parametrize(("base", "expected"), [
    (utc(2024, 5, 1, 12), utc(2024, 5, 1, 22)),
    (utc(2024, 5, 1, 4), utc(2024, 5, 1, 22)),
    (utc(2024, 5, 1, 23), utc(2024, 5, 1, 23)),
    (utc(2024, 5, 1, 3, 59), utc(2024, 5, 1, 3, 59)),
])
def test_window_spanning_midnight(base: datetime, expected: datetime) -> None:
    s = Schedule(every=HOUR, window=parse_window("22:00-04:00"))
    assert due(s, after(base - timedelta(hours=1))) == Due(expected, "schedule")


def test_window_is_local_time_in_the_schedule_time_zone() -> None:
    s = Schedule(every=HOUR, timezone="Europe/Berlin", window=NIGHT)
    # 00:30 UTC is 02:30 in Berlin in July: inside, although outside in UTC.
    assert due(s, after(utc(2024, 6, 30, 23, 30))) == Due(utc(2024, 7, 1, 0, 30), "schedule")


@pytest.mark.parametrize(("base", "expected"), [
    (utc(2024, 3, 29, 23, 30), utc(2024, 3, 30, 1)),   # 02:00 CET
    (utc(2024, 3, 30, 23, 30), utc(2024, 3, 31, 1)),   # 02:00 does not exist: 03:00 CEST
    (utc(2024, 3, 31, 22, 30), utc(2024, 4, 1, 0)),    # 02:00 CEST
    (utc(2024, 10, 26, 22, 30), utc(2024, 10, 27, 0)),  # 02:00 twice: the first, CEST
    (utc(2024, 10, 27, 23, 30), utc(2024, 10, 28, 1)),  # 02:00 CET
])
def test_window_opening_on_dst_days(base: datetime, expected: datetime) -> None:
    s = Schedule(every=HOUR, timezone="Europe/Berlin", window=NIGHT)
    assert due(s, after(base - timedelta(hours=1))) == Due(expected, "schedule")


def test_window_contains_is_half_open_and_wraps() -> None:
    wrap = Window(time(22), time(4))
    assert [wrap.contains(utc(2024, 5, 1, h)) for h in (21, 22, 0, 3, 4)] == [
        False, True, True, True, False]
    assert [NIGHT.contains(utc(2024, 5, 1, h)) for h in (1, 2, 4, 5)] == [
        False, True, True, False]


# --- jitter ------------------------------------------------------------------------------

def test_jitter_is_deterministic_and_depends_on_target_and_anchor() -> None:
    s = Schedule(every=DAY, jitter=HOUR)
    history = after(utc(2024, 5, 1, 10))
    first = due(s, history, target="acme")
    assert first == due(s, history, target="acme")
    assert first != due(s, history, target="globex")
    # A new anchor (the next rotation) draws a new offset for the same target.
    moved = due(s, after(utc(2024, 5, 1, 11)), target="acme")
    assert first is not None and moved is not None
    assert first.at - utc(2024, 5, 2, 10) != moved.at - utc(2024, 5, 2, 11)


def test_first_rotation_is_not_jittered() -> None:
    # "now + jitter" would recede with every sweep and never come due.
    s = Schedule(every=DAY, jitter=HOUR)
    assert {due(s, target=f"target-{i}") for i in range(20)} == {Due(NOW, "first_rotation")}


def test_jitter_spreads_targets() -> None:
    s = Schedule(every=DAY, jitter=HOUR)
    history = after(utc(2024, 5, 1, 10))
    offsets = []
    for i in range(100):
        result = due(s, history, target=f"target-{i}")
        assert result is not None
        offsets.append(result.at - utc(2024, 5, 2, 10))
    assert len(set(offsets)) == 100
    # Both halves of the hour are used: the offsets are not bunched at one end.
    assert any(o < timedelta(minutes=30) for o in offsets)
    assert any(o >= timedelta(minutes=30) for o in offsets)


@settings(database=None, max_examples=200)
@given(target=st.text(), jitter=st.floats(min_value=0, max_value=30 * DAY),
       anchor_offset=st.integers(min_value=0, max_value=10**12))
def test_jitter_stays_in_range(target: str, jitter: float, anchor_offset: int) -> None:
    anchor = utc(2020, 1, 1) + timedelta(microseconds=anchor_offset)
    result = next_due(Schedule(every=HOUR, jitter=jitter), after(anchor), target=target, now=NOW)
    assert result is not None
    offset = result.at - (anchor + timedelta(hours=1))
    assert timedelta(0) <= offset
    assert offset < timedelta(seconds=jitter) or offset == timedelta(0)


def test_jittered_base_still_lands_in_the_window() -> None:
    s = Schedule(every=DAY, jitter=12 * HOUR, window=NIGHT)
    for i in range(30):
        result = due(s, after(utc(2024, 5, 1, 2)), target=f"target-{i}")
        assert result is not None and NIGHT.contains(result.at)


# --- liveness: a sweep just after the deadline finds the target due -----------------------

@pytest.mark.parametrize("schedule", [
    Schedule(every=DAY),
    Schedule(every=DAY, jitter=HOUR, window=parse_window("02:00-05:00")),
    Schedule(cron="0 3 * * MON", timezone="Europe/Berlin"),
    Schedule(cron="30 2 * * *", timezone="Europe/Berlin", jitter=HOUR, window=NIGHT),
    Schedule(max_key_age=30 * DAY),
    Schedule(cron="0 3 * * *", max_key_age=DAY, window=NIGHT),
])
@pytest.mark.parametrize("history", [
    History(),
    History(last_completed_started_at=utc(2024, 4, 28, 3)),
    History(key_since=utc(2024, 4, 1)),
    History(last_completed_started_at=utc(2024, 10, 27, 0, 30), key_since=utc(2024, 10, 27)),
    History(last_failure_at=utc(2024, 5, 1, 11), failures_since_success=4),
])
def test_a_sweep_just_after_the_deadline_finds_it_due(
    schedule: Schedule, history: History
) -> None:
    first = due(schedule, history)
    assert first is not None
    sweep = max(first.at, NOW) + timedelta(milliseconds=20)
    again = due(schedule, history, now=sweep)
    assert again is not None and again.at <= sweep


# --- max_key_age -------------------------------------------------------------------------

def test_max_key_age_forces_ahead_of_schedule_ignoring_window_and_jitter() -> None:
    s = Schedule(every=30 * DAY, window=NIGHT, jitter=HOUR, max_key_age=40 * DAY)
    history = History(last_completed_started_at=utc(2024, 5, 1, 10),
                      key_since=utc(2024, 4, 1, 10))
    assert due(s, history) == Due(utc(2024, 5, 11, 10), "max_key_age")


def test_max_key_age_falls_back_to_the_anchor() -> None:
    s = Schedule(every=30 * DAY, max_key_age=7 * DAY)
    assert due(s, after(utc(2024, 5, 1, 10))) == Due(utc(2024, 5, 8, 10), "max_key_age")


def test_max_key_age_later_than_the_schedule_changes_nothing() -> None:
    s = Schedule(every=DAY, max_key_age=90 * DAY)
    assert due(s, after(utc(2024, 5, 1, 10))) == Due(utc(2024, 5, 2, 10), "schedule")


def test_max_key_age_beats_a_first_rotation_when_the_key_is_known_old() -> None:
    s = Schedule(every=DAY, max_key_age=30 * DAY)
    result = due(s, History(key_since=utc(2024, 1, 1)))
    assert result == Due(utc(2024, 1, 31), "max_key_age")


def test_max_key_age_only() -> None:
    s = Schedule(max_key_age=90 * DAY)
    assert due(s, History(key_since=utc(2024, 3, 1))) == Due(utc(2024, 5, 30), "max_key_age")
    assert due(s) == Due(NOW, "max_key_age")


# --- enabled, manual ---------------------------------------------------------------------

def test_disabled_is_never_due() -> None:
    s = Schedule(every=HOUR, max_key_age=DAY, enabled=False)
    assert due(s, after(utc(2020, 1, 1))) is None


def test_no_every_cron_or_max_key_age_is_manual_only() -> None:
    assert due(Schedule(window=NIGHT, jitter=HOUR), after(utc(2020, 1, 1))) is None


# --- failure back-off --------------------------------------------------------------------

@pytest.mark.parametrize(("failures", "delay_hours"), [
    (1, 1), (2, 2), (3, 4), (5, 16), (6, 24), (7, 24), (10_000, 24),
])
def test_failure_backoff_doubles_up_to_a_day(failures: int, delay_hours: int) -> None:
    failed = utc(2024, 5, 1, 11)
    history = History(last_completed_started_at=utc(2024, 4, 1), last_failure_at=failed,
                      failures_since_success=failures)
    assert due(Schedule(every=DAY), history) == Due(failed + timedelta(hours=delay_hours),
                                                    "schedule")


def test_failure_backoff_keeps_the_reason_and_a_later_due_time() -> None:
    failed = utc(2024, 5, 1, 11)
    forced = History(key_since=utc(2024, 1, 1), last_failure_at=failed, failures_since_success=1)
    assert due(Schedule(max_key_age=DAY), forced) == Due(utc(2024, 5, 1, 12), "max_key_age")
    later = History(last_completed_started_at=utc(2024, 5, 1, 10), last_failure_at=failed,
                    failures_since_success=1)
    assert due(Schedule(every=DAY), later) == Due(utc(2024, 5, 2, 10), "schedule")


def test_failure_count_without_a_failure_time_does_not_back_off() -> None:
    history = History(last_completed_started_at=utc(2024, 4, 1), failures_since_success=3)
    assert due(Schedule(every=DAY), history) == Due(utc(2024, 4, 2), "schedule")


def test_retry_failed_after_scales_the_backoff() -> None:
    failed = utc(2024, 5, 1, 11)
    history = History(last_failure_at=failed, failures_since_success=3)
    assert due(Schedule(every=DAY, retry_failed_after=1800), history) == Due(
        failed + timedelta(hours=2), "first_rotation")


# --- naive input -------------------------------------------------------------------------

NAIVE = datetime(2024, 5, 1, 12)


@pytest.mark.parametrize("history", [
    History(last_completed_started_at=NAIVE),
    History(key_since=NAIVE),
    History(last_failure_at=NAIVE, failures_since_success=1),
])
def test_naive_history_is_rejected(history: History) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        due(Schedule(every=DAY), history)


def test_naive_now_is_rejected() -> None:
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        due(Schedule(every=DAY), now=NAIVE)


# --- parsing and validation --------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("02:00-05:00", Window(time(2), time(5))),
    (" 22:00 - 04:30 ", Window(time(22), time(4, 30))),
    ("00:00-23:59", Window(time(0), time(23, 59))),
])
def test_parse_window(text: str, expected: Window) -> None:
    assert parse_window(text) == expected


@pytest.mark.parametrize("text", [
    "2:00-5:00", "02:00-24:00", "02:60-05:00", "02:00", "", "nightly", "02:00-02:00",
    "02:00-05:00-06:00", "02.00-05.00",
])
def test_parse_window_rejects_and_names_the_text(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        parse_window(text)


def test_window_refuses_equal_start_and_end() -> None:
    with pytest.raises(ValueError, match="differ"):
        Window(time(2), time(2))


def test_check_cron_accepts_a_valid_expression() -> None:
    check_cron("0 3 * * MON", "Europe/Berlin")
    check_cron("*/15 2-4 1,15 * *", "UTC")


@pytest.mark.parametrize(("expr", "why"), [
    ("0 3 * *", "5 fields"),
    ("0 3 * * * *", "5 fields"),
    ("61 * * * *", "59"),
    ("0 3 * * 8", "day of week"),
    ("0 3 * * 5-1", "range"),
    ("0 3 ? * *", "Unrecognized"),
    ("0 3 1 * MON", "not both"),
    ("0 3 30 2 *", "never fires"),
])
def test_check_cron_rejects_bad_expressions(expr: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(expr))) as info:
        check_cron(expr, "UTC")
    assert why in str(info.value)


def test_check_cron_rejects_a_bad_time_zone() -> None:
    with pytest.raises(ValueError, match=re.escape("unknown time zone 'Mars/Olympus'")):
        check_cron("0 3 * * MON", "Mars/Olympus")


@pytest.mark.parametrize("name", ["Mars/Olympus", "Europe", "", "../etc/passwd", "utc"])
def test_check_timezone(name: str) -> None:
    assert check_timezone("Europe/Berlin").key == "Europe/Berlin"
    with pytest.raises(ValueError, match=re.escape(f"unknown time zone {name!r}")):
        check_timezone(name)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"every": DAY, "cron": "0 3 * * *"}, "not both"),
    ({"every": 0.0}, "every"),
    ({"jitter": -1.0}, "jitter"),
    ({"max_key_age": 0.0}, "max_key_age"),
    ({"retry_failed_after": -1.0}, "retry_failed_after"),
    ({"cron": "0 3 * *"}, "5 fields"),
    ({"timezone": "Mars/Olympus"}, "unknown time zone"),
])
def test_schedule_refuses_invalid_settings(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Schedule(**kwargs)  # type: ignore[arg-type]
