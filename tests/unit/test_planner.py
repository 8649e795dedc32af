"""The daemon's planner: what one target needs now, from the reader's facts alone (no IO)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rotator.core.model import Rotation, ScheduleFacts, Status, Step
from rotator.daemon.planner import (
    Decision,
    Work,
    WorkKind,
    decide,
    decide_in_flight,
    history_of,
    still_due,
)
from rotator.scheduling.schedule import Schedule

NOW = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
DAY = 86400.0
EVERY_DAY = Schedule(every=DAY)


def _rotation(**changes: object) -> Rotation:
    base = Rotation(rotation_id="rot_1", target="app", service_account="sa_1",
                    trigger="schedule", actor="scheduler", grace_seconds=60,
                    started_at=NOW - timedelta(hours=1))
    return base.evolve(**changes)


def _done(started: datetime) -> Rotation:
    return _rotation(status=Status.COMPLETED, step=Step.DONE, started_at=started,
                     finished_at=started + timedelta(minutes=2),
                     grace_ends_at=started + timedelta(minutes=1))


NEVER_ROTATED = ScheduleFacts(None, 0, None)


def test_a_never_rotated_target_starts_at_once() -> None:
    decision = decide("app", EVERY_DAY, NEVER_ROTATED, None, 0, NOW)
    assert decision.work == (Work("app", WorkKind.START, "first_rotation"),)
    assert decision.wake_at is None and decision.due is not None and decision.due.at == NOW


def test_a_running_rotation_in_grace_wakes_when_the_grace_ends() -> None:
    ends = NOW + timedelta(seconds=30)
    running = _rotation(step=Step.GRACE, grace_ends_at=ends)
    decision = decide("app", EVERY_DAY, NEVER_ROTATED, running, 0, NOW)
    assert decision.work == () and decision.wake_at == ends and decision.due is None


def test_a_running_rotation_past_its_grace_or_mid_step_is_resumed_and_nothing_started() -> None:
    for running in (_rotation(step=Step.GRACE, grace_ends_at=NOW), _rotation(step=Step.VERIFY)):
        decision = decide("app", EVERY_DAY, NEVER_ROTATED, running, 3, NOW)
        assert decision.work == (Work("app", WorkKind.RESUME, "resume"),)
        assert decision.wake_at is None


def test_an_orphan_is_rolled_back_before_its_store_and_resumed_from_it_never_started() -> None:
    back = (Work("app", WorkKind.ROLL_BACK, "target left the config"),)
    for step in (Step.PLAN, Step.CREATE, Step.VERIFY):
        assert decide_in_flight("app", _rotation(step=step), 0, NOW, orphan=True).work == back
        # A configured target's rotation at that step goes on.
        assert decide_in_flight("app", _rotation(step=step), 0, NOW).work == (
            Work("app", WorkKind.RESUME, "resume"),)
    for step in (Step.STORE, Step.REVOKE, Step.ROLLBACK):
        assert decide_in_flight("app", _rotation(step=step), 0, NOW, orphan=True).work == (
            Work("app", WorkKind.RESUME, "resume"),)
    ends = NOW + timedelta(seconds=30)
    in_grace = decide_in_flight("app", _rotation(step=Step.GRACE, grace_ends_at=ends), 0, NOW,
                                orphan=True)
    assert in_grace.work == () and in_grace.wake_at == ends
    assert decide_in_flight("app", None, 2, NOW, orphan=True).work == (
        Work("app", WorkKind.CLEANUP, "cleanup"),)
    assert decide_in_flight("app", None, 0, NOW, orphan=True).work == ()


def test_queued_deletions_are_retried_beside_a_schedule_that_is_not_due() -> None:
    facts = ScheduleFacts(_done(NOW - timedelta(hours=2)), 0, None)
    decision = decide("app", EVERY_DAY, facts, None, 2, NOW)
    assert decision.work == (Work("app", WorkKind.CLEANUP, "cleanup"),)
    assert decision.due is not None
    assert decision.wake_at == decision.due.at == NOW - timedelta(hours=2) + timedelta(days=1)


def test_a_due_schedule_starts_after_the_queued_deletions() -> None:
    facts = ScheduleFacts(_done(NOW - timedelta(days=1, seconds=1)), 0, None)
    decision = decide("app", EVERY_DAY, facts, None, 1, NOW)
    assert [w.kind for w in decision.work] == [WorkKind.CLEANUP, WorkKind.START]
    assert decision.work[1].trigger == "schedule" and decision.wake_at is None


def test_a_disabled_schedule_neither_starts_nor_sets_a_timer() -> None:
    decision = decide("app", Schedule(enabled=False), NEVER_ROTATED, None, 0, NOW)
    assert decision == Decision((), None, None)


def test_history_is_read_from_the_last_completed_rotation_and_the_failures_since() -> None:
    done = _done(NOW - timedelta(days=3))
    failed_at = NOW - timedelta(hours=5)
    history = history_of(ScheduleFacts(done, 2, failed_at))
    assert history.last_completed_started_at == done.started_at
    assert history.key_since == done.key_stored_at == done.started_at  # grace 60s from start+1m
    assert history.last_failure_at == failed_at and history.failures_since_success == 2


def test_still_due_asks_the_schedule_again_with_fresh_facts() -> None:
    stale = ScheduleFacts(_done(NOW - timedelta(days=2)), 0, None)
    fresh = ScheduleFacts(_done(NOW - timedelta(seconds=5)), 0, None)
    assert still_due("app", EVERY_DAY, stale, NOW)
    assert not still_due("app", EVERY_DAY, fresh, NOW)
