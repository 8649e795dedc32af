"""What the runner tells the operator: every log event of a run, with its level and fields.

Logs are part of the product: quiet when all is well, loud (a warning, an error) when
something is wrong. Each test pins whole events, the ``target`` and ``rotation_id`` bound
through context vars included, as an operator's log pipeline receives them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from rotator.core.errors import LeaseLost, ProviderUnavailable
from rotator.core.model import Status, Step
from rotator.core.secret import Secret
from rotator.core.target import TargetSpec
from rotator.engine.runner import Runner
from tests.fakes import Crash
from tests.unit.test_runner import World
from tests.unit.test_runner_behaviour import (
    rollback_blocked_by_vault,
    runner,
    seconds_since,
    spy,
)

Event = dict[str, Any]


@contextmanager
def logged() -> Iterator[list[Event]]:
    """The events logged inside, with the context vars merged in as in production."""
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as events:
        yield events
    assert structlog.contextvars.get_contextvars() == {}   # nothing bound leaks out


def step(rid: str, done: str, then: str, outcome: str) -> Event:
    return {"event": "rotation_step", "log_level": "info", "target": "app",
            "rotation_id": rid, "step": done, "next": then, "outcome": outcome}


def test_a_completed_rotation_logs_its_start_each_step_the_grace_and_its_end() -> None:
    w = World()
    with logged() as events:
        rot = runner(w).rotate(w.spec).rotation
    rid = rot.rotation_id
    assert events == [
        {"event": "rotation_started", "log_level": "info", "target": "app",
         "rotation_id": rid, "trigger": "manual"},
        step(rid, "plan", "create", "Planned"), step(rid, "create", "verify", "KeyCreated"),
        step(rid, "verify", "store", "Verified"), step(rid, "store", "grace", "Stored"),
        {"event": "grace_waiting", "log_level": "info", "target": "app", "rotation_id": rid,
         "until": "2026-11-01T12:00:30+00:00"},
        step(rid, "grace", "revoke", "GraceElapsed"), step(rid, "revoke", "done", "Revoked"),
        {"event": "rotation_completed", "log_level": "info", "target": "app",
         "rotation_id": rid, "new_key_id": rot.new_key_id, "revoked_key_id": rot.old_key_id,
         "note": None},
    ]
    assert rot.new_key_id and rot.old_key_id


def test_a_completed_rotation_with_a_queued_old_key_says_so_in_its_last_event() -> None:
    w = World()
    w.provider.fail["delete_key"] = ProviderUnavailable("503")
    with logged() as events:
        rot = runner(w).rotate(w.spec, trigger="schedule", actor="d1").rotation
    assert rot.status is Status.COMPLETED
    assert events[0]["trigger"] == "schedule"
    assert events[-1] == {
        "event": "rotation_completed", "log_level": "info", "target": "app",
        "rotation_id": rot.rotation_id, "new_key_id": rot.new_key_id,
        "revoked_key_id": rot.old_key_id,
        "note": f"old key {rot.old_key_id} queued for cleanup: ProviderUnavailable: 503"}


def test_a_rolled_back_rotation_ends_with_an_error_naming_its_status_and_reason() -> None:
    w = World(never_authenticates=True)
    r = runner(w)
    with logged() as events:
        rot = r.rotate(w.spec).rotation
    assert r._fresh == {}                 # the unverified key's secret is forgotten too
    rid, reason = rot.rotation_id, rot.reason
    assert rot.status is Status.ROLLED_BACK and reason and "did not authenticate" in reason
    assert events[1:] == [
        step(rid, "plan", "create", "Planned"), step(rid, "create", "verify", "KeyCreated"),
        step(rid, "verify", "rollback", "StepFailed"),
        {"event": "rotation_rolled_back", "log_level": "error", "target": "app",
         "rotation_id": rid, "reason": reason},
        step(rid, "rollback", "done", "RolledBack"),
        {"event": "rotation_failed", "log_level": "error", "target": "app",
         "rotation_id": rid, "status": "rolled_back", "reason": reason},
    ]


def test_a_blocked_rollback_logs_an_error_for_each_attempt() -> None:
    w = World()
    rollback_blocked_by_vault(w)
    with logged() as events:
        rot = runner(w).rotate(w.spec).rotation
    assert rot.step is Step.ROLLBACK
    assert [e for e in events if e["event"] == "rollback_blocked"] == [
        {"event": "rollback_blocked", "log_level": "error", "target": "app",
         "rotation_id": rot.rotation_id, "reason": "cannot read Vault: down", "attempt": n}
        for n in (1, 2, 3)]


def test_a_parked_rotation_logs_the_step_it_waits_at() -> None:
    w = World()
    with logged() as events:
        rot = runner(w, stopping=lambda: True).rotate(w.spec).rotation
    assert events[1:] == [{"event": "rotation_parked", "log_level": "info", "target": "app",
                           "rotation_id": rot.rotation_id, "step": "plan"}]


def test_a_rotation_another_process_left_is_resumed_with_a_warning() -> None:
    w = World()
    rot = w.runner().rotate(w.spec, wait=False).rotation
    with logged() as events:
        w.runner(holder="h2").rotate(w.spec, wait=False)
    assert events == [{"event": "rotation_resumed", "log_level": "warning", "target": "app",
                       "rotation_id": rot.rotation_id, "step": "grace", "open_intents": 0}]


def test_the_rotation_id_is_the_start_time_and_six_random_hex_digits() -> None:
    w = World()
    rid = w.runner().rotate(w.spec, wait=False).rotation.rotation_id
    assert re.fullmatch(r"rot_20261101T120000_[0-9a-f]{6}", rid), rid


# -- a lost lease -----------------------------------------------------------------------
def _taken_over_while_sleeping(w: World) -> None:
    """The next sleep of the clock lasts past the lease; holder h2 takes the target."""
    sleep = w.clock.sleep

    def sleep_past_the_lease(seconds: float) -> None:
        w.clock.sleep = sleep  # type: ignore[method-assign]
        sleep(61)
        assert w.repo.acquire_lease("app", "h2", 60, w.clock.now())

    w.clock.sleep = sleep_past_the_lease  # type: ignore[method-assign]


def test_a_lease_lost_during_grace_stops_the_run_with_a_warning() -> None:
    w = World()
    r = runner(w)
    rot = r.rotate(w.spec, wait=False).rotation
    assert rot.step is Step.GRACE
    _taken_over_while_sleeping(w)
    with logged() as events, pytest.raises(LeaseLost) as lost:
        r.rotate(w.spec)
    # Renewing the lease after the first slice of the wait finds it gone.
    assert str(lost.value) == ("lost the lease mid-rotation; another process took over "
                               "(generation=2, target=app)")
    assert events[-1] == {
        "event": "lease_lost", "log_level": "warning", "target": "app",
        "rotation_id": rot.rotation_id, "generation": 2,
        "detail": "another process took this target over; stopped, nothing written"}
    assert w.repo.by_id[rot.rotation_id].step is Step.GRACE


def test_a_lease_lost_while_the_new_secret_is_only_in_memory_forgets_it() -> None:
    w = World()
    r = runner(w)
    whoami = w.provider.whoami

    def probe_then_lose_the_lease(key: Secret) -> Any:
        if r._fresh:                                  # probing the new key
            w.provider.whoami = whoami  # type: ignore[method-assign]
            w.clock.sleep(61)
            assert w.repo.acquire_lease("app", "h2", 60, w.clock.now())
        return whoami(key)

    w.provider.whoami = probe_then_lose_the_lease  # type: ignore[method-assign]
    with logged() as events, pytest.raises(LeaseLost):
        r.rotate(w.spec)
    (rot,) = w.repo.by_id.values()
    assert events[-1]["event"] == "lease_lost"
    assert events[-1]["rotation_id"] == rot.rotation_id
    assert r._fresh == {}         # another holder runs it now: this process must not store


@pytest.mark.parametrize("run", [Runner.cleanup, Runner.rotate], ids=["cleanup", "rotate"])
def test_a_cleanup_that_loses_its_lease_stops_with_a_warning(
        run: Callable[[Runner, TargetSpec], object]) -> None:
    # A run's cleanup of queued keys comes before its rotation: no rotation to name yet.
    w = World()
    w.provider.fail["delete_key"] = ProviderUnavailable("503")
    w.runner().rotate(w.spec)                    # the old key is queued for cleanup
    del w.provider.fail["delete_key"]
    delete = w.provider.delete_key

    def delete_then_lose_the_lease(*args: Any) -> Any:
        w.provider.delete_key = delete  # type: ignore[method-assign]
        deleted = delete(*args)
        w.clock.sleep(61)
        assert w.repo.acquire_lease("app", "h3", 60, w.clock.now())
        return deleted

    w.provider.delete_key = delete_then_lose_the_lease  # type: ignore[method-assign]
    with logged() as events, pytest.raises(LeaseLost):
        run(runner(w, holder="h2"), w.spec)
    assert events == [{
        "event": "lease_lost", "log_level": "warning", "target": "app", "rotation_id": None,
        "generation": 2,
        "detail": "another process took this target over; stopped, nothing written"}]


# -- a take-over ------------------------------------------------------------------------
def _killed_during_create(w: World) -> None:
    """Holder h1 dies right after Count created its key: an open intent, a lease not released."""
    release = w.repo.release_lease
    w.repo.release_lease = lambda target, holder: None  # type: ignore[method-assign]
    w.provider.crash_at = "create_key:after"
    with pytest.raises(Crash):
        runner(w).rotate(w.spec)
    w.provider.crash_at = None
    w.repo.release_lease = release  # type: ignore[method-assign]


def test_a_take_over_warns_and_renews_its_lease_while_it_waits_out_the_dead_holders_call(
        ) -> None:
    w = World()
    _killed_during_create(w)
    (rot,) = w.repo.by_id.values()
    start = w.clock.now()
    confirms = spy(w.repo, "confirm_lease", lambda lease, ttl, now: seconds_since(w, start))
    with logged() as events:
        done = runner(w, holder="h2", call_deadline=50).rotate(w.spec, lease_wait=120)
    assert done.rotation.status is Status.COMPLETED and done.resumed
    # h1's lease ran to 60 s; h2 took it at 60.5 s and waits to 60 s + call_deadline,
    # renewing its lease every third of its ttl.
    assert confirms[:3] == [80.5, 100.5, 110]
    assert events[:3] == [
        {"event": "lease_waiting", "log_level": "info", "target": "app", "seconds": 120},
        {"event": "takeover_waiting", "log_level": "warning", "target": "app",
         "reason": "the previous holder left a side effect undecided; waiting until its "
                   "call must have ended", "seconds": 49.5},
        {"event": "rotation_resumed", "log_level": "warning", "target": "app",
         "rotation_id": rot.rotation_id, "step": "create", "open_intents": 1},
    ]


@pytest.mark.parametrize("deadline", [{"call_deadline": 0.5}, {}], ids=["exactly", "default"])
def test_a_take_over_after_the_dead_holders_call_must_have_ended_neither_waits_nor_warns(
        deadline: dict[str, float]) -> None:
    w = World()
    _killed_during_create(w)
    w.clock.sleep(60.5)        # past h1's lease by exactly the call deadline, or by more
    start = w.clock.now()
    confirms = spy(w.repo, "confirm_lease", lambda lease, ttl, now: seconds_since(w, start))
    with logged() as events:
        runner(w, holder="h2", **deadline).rotate(w.spec, wait=False)
    assert events[0]["event"] == "rotation_resumed"
    assert confirms[0] == 0


def test_the_take_over_warning_gives_the_wait_to_the_millisecond() -> None:
    w = World()
    _killed_during_create(w)
    w.clock.sleep(60.0001234)
    with logged() as events:
        runner(w, holder="h2", call_deadline=50).rotate(w.spec, wait=False)
    assert events[0]["event"] == "takeover_waiting"
    assert events[0]["seconds"] == 50.0               # 49.9998766 s
