"""Usage-aware grace: the pure decision, the machine's hold, and the runner on fake ports.

The old key is held past its grace window while the provider says it is used, revoked
once quiet for ``quiet_period``, and at ``max_grace`` whatever its use; every decision is
an audit note, and a hold is a stored deadline that a restarted runner (or the daemon's
planner) finds again.
"""

from __future__ import annotations

import contextlib
import dataclasses
from datetime import datetime, timedelta

import pytest

from rotator.core import machine as m
from rotator.core.errors import ProviderUnavailable, Unauthorized
from rotator.core.grace import GracePolicy, Hold, MaxGraceReached, Quiet, judge_usage
from rotator.core.model import Rotation, ScheduleFacts, Status, Step
from rotator.core.ports import SecretRef
from rotator.core.secret import Secret
from rotator.core.target import TargetSpec
from rotator.core.vocabulary import AuditAction, AuditResult
from rotator.daemon import planner
from rotator.engine.runner import Runner
from rotator.scheduling.schedule import Schedule
from tests.fakes import T0, FakeClock, FakeProvider, FakeStore, MemoryRepository

POLICY = GracePolicy(quiet_period=60, max_grace=600)
STORED = T0
REF = SecretRef("secret", "count/app", "api_key")


def _s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _judge(last_used: float | None, now: float, *, known: bool = True) -> object:
    return judge_usage(POLICY, stored_at=STORED, usage_known=known, now=_s(now),
                       last_used_at=None if last_used is None else _s(last_used))


def test_a_key_used_within_the_quiet_period_is_held_until_quiet() -> None:
    assert _judge(100, 120) == Hold(_s(100), _s(160))


def test_a_key_quiet_for_the_quiet_period_goes() -> None:
    assert _judge(100, 160) == Quiet(_s(100))
    assert _judge(100, 500) == Quiet(_s(100))


def test_a_hold_never_ends_past_max_grace() -> None:
    assert _judge(590, 595) == Hold(_s(590), _s(600))


def test_a_key_still_used_at_max_grace_goes_anyway() -> None:
    assert _judge(599, 600) == MaxGraceReached(_s(599), _s(600))


def test_a_key_quiet_at_max_grace_is_quiet_not_an_alert() -> None:
    assert _judge(100, 700) == Quiet(_s(100))


def test_no_last_use_reported_is_the_plain_grace_window() -> None:
    assert _judge(None, 30) == Quiet(None)


def test_an_unreadable_listing_holds_a_quiet_period_more_within_max_grace() -> None:
    assert _judge(None, 30, known=False) == Hold(None, _s(90))
    assert _judge(None, 580, known=False) == Hold(None, _s(600))
    assert _judge(None, 600, known=False) == MaxGraceReached(None, _s(600))


def _in_grace(ends: float = 30) -> Rotation:
    return Rotation(rotation_id="rot_1", target="app", service_account="sa_1",
                    trigger="manual", actor="t", grace_seconds=ends, started_at=T0,
                    step=Step.GRACE, old_key_id="key_old", old_version=1,
                    new_key_id="key_new", new_version=2, grace_ends_at=_s(ends))


def test_a_hold_moves_the_deadline_and_keeps_the_windows_start() -> None:
    held = m.advance(_in_grace(), m.GraceHeld(_s(75)), _s(30))
    assert (held.step, held.grace_ends_at, held.grace_started_at) == (Step.GRACE, _s(75), T0)
    assert m.next_action(held, _s(74), holds_secret=False) is m.Action.WAIT
    assert m.next_action(held, _s(75), holds_secret=False) is m.Action.END_GRACE
    # The daemon's planner wakes at the held deadline, not before: no busy polling.
    decision = planner.decide("app", Schedule(), ScheduleFacts(None, 0, None), held, 0, _s(31))
    assert (decision.work, decision.wake_at) == ((), _s(75))


def test_a_hold_that_does_not_move_the_deadline_later_is_a_bug() -> None:
    with pytest.raises(m.InvalidTransition):
        m.advance(_in_grace(), m.GraceHeld(_s(30)), _s(30))


class _Consumer(FakeClock):
    """A clock whose sleeps are spent by a consumer calling with ``old`` every second until
    ``stop_at`` (None: never)."""

    def __init__(self, stop_at: float | None) -> None:
        super().__init__()
        self.stop_at = stop_at
        self.provider: FakeProvider | None = None
        self.old: Secret | None = None

    def sleep(self, seconds: float) -> None:
        end = self.current + timedelta(seconds=max(seconds, 0))
        while self.current < end:
            self.current = min(end, self.current + timedelta(seconds=1))
            using = self.stop_at is None or self.current <= _s(self.stop_at)
            if using and self.provider is not None and self.old is not None:
                with contextlib.suppress(Unauthorized):   # revoked: the consumer just fails
                    self.provider.whoami(self.old)


class _World:
    def __init__(self, stop_at: float | None, policy: GracePolicy | None = POLICY) -> None:
        self.store = FakeStore()
        self.repo = MemoryRepository()
        self.clock = _Consumer(stop_at)
        self.provider = FakeProvider(self.clock)
        admin = self.provider.seed("sa_admin")
        self.old = self.provider.seed("sa_1")
        self.clock.provider, self.clock.old = self.provider, self.old
        self.store.put(REF, self.old)
        self.spec = TargetSpec(name="app", provider="count", service_account="sa_1", ref=REF,
                               grace_seconds=30, probe_timeout=20, probe_interval=1,
                               management_key=admin, usage_grace=policy)

    def runner(self) -> Runner:
        return Runner(providers={"count": self.provider}, store=self.store, repo=self.repo,
                      clock=self.clock, holder="h", lease_ttl=60)

    def notes(self, action: AuditAction) -> list[tuple[str | None, str | None]]:
        return [(e.result, e.detail) for e in self.repo.recorded if e.action == action]

    def revoked_at(self) -> datetime:
        (at,) = [e.at for e in self.repo.recorded if e.action == AuditAction.REVOKE_KEY
                 and e.kind == "intent"]
        assert at is not None
        return at


def test_the_old_key_goes_once_its_consumer_has_been_quiet_for_the_quiet_period() -> None:
    w = _World(stop_at=200)
    report = w.runner().rotate(w.spec)
    assert report.rotation.status is Status.COMPLETED
    assert w.revoked_at() >= _s(260)          # the last use at 200, plus 60 s of quiet
    assert w.revoked_at() < _s(262)
    held = w.notes(AuditAction.GRACE_HELD)
    assert held and all(r == AuditResult.IN_USE for r, _ in held)
    assert all("still used at" in (d or "") for _, d in held)
    ((result, detail),) = w.notes(AuditAction.GRACE_OVER)
    assert result == AuditResult.QUIET and "quiet since" in (detail or "")


def test_a_key_used_until_max_grace_is_revoked_there_with_its_own_result() -> None:
    w = _World(stop_at=None)
    report = w.runner().rotate(w.spec)
    assert report.rotation.status is Status.COMPLETED
    stored_at = report.rotation.grace_started_at
    assert stored_at is not None
    assert stored_at + timedelta(seconds=600) <= w.revoked_at() < stored_at + timedelta(
        seconds=602)
    ((result, detail),) = w.notes(AuditAction.GRACE_OVER)
    assert result == AuditResult.MAX_GRACE_REACHED and "max_grace 600s" in (detail or "")


def test_a_hold_is_stored_so_a_restarted_runner_keeps_it() -> None:
    w = _World(stop_at=None)
    first = w.runner().rotate(w.spec, wait=False)
    assert first.rotation.step is Step.GRACE
    w.clock.sleep(30)                         # the window is over, the consumer still busy
    second = w.runner().rotate(w.spec, wait=False)   # a new process: nothing in memory
    assert second.resumed and second.rotation.step is Step.GRACE
    stored = w.repo.get_rotation(second.rotation.rotation_id)
    assert stored is not None and stored.grace_ends_at == second.rotation.grace_ends_at
    assert stored.grace_ends_at is not None and stored.grace_ends_at > w.clock.now()
    assert stored.grace_started_at == first.rotation.grace_started_at
    assert w.provider.key_of(w.old) is not None           # not revoked yet


def test_without_a_policy_the_key_goes_when_the_window_ends_as_before() -> None:
    w = _World(stop_at=None, policy=None)
    assert w.runner().rotate(w.spec, wait=False).rotation.step is Step.GRACE
    calls_before = len(w.provider.calls)
    report = w.runner().rotate(w.spec)
    assert report.rotation.status is Status.COMPLETED
    assert w.notes(AuditAction.GRACE_OVER) == [(AuditResult.OK, None)]
    assert not w.notes(AuditAction.GRACE_HELD)
    assert "list_keys" not in w.provider.calls[calls_before:]   # no usage looked up


def test_a_listing_that_fails_holds_the_key_and_says_so() -> None:
    w = _World(stop_at=None)
    first = w.runner().rotate(w.spec, wait=False)
    w.clock.sleep(30)
    w.provider.fail["list_keys"] = ProviderUnavailable("503")
    again = w.runner().rotate(w.spec, wait=False)
    assert again.rotation.step is Step.GRACE
    assert again.rotation.grace_ends_at == w.clock.now() + timedelta(seconds=60)
    ((result, detail),) = w.notes(AuditAction.GRACE_HELD)
    assert result == AuditResult.UNKNOWN and "cannot read its last use" in (detail or "")
    assert first.rotation.rotation_id == again.rotation.rotation_id


def test_an_operators_grace_is_the_window_exactly_with_no_hold() -> None:
    w = _World(stop_at=None)
    report = w.runner().rotate(w.spec, grace=0)
    assert report.rotation.status is Status.COMPLETED and report.rotation.usage_grace is None
    assert w.notes(AuditAction.GRACE_OVER) == [(AuditResult.OK, None)]
    assert not w.notes(AuditAction.GRACE_HELD)


def test_the_policy_a_rotation_started_with_is_the_one_it_follows() -> None:
    w = _World(stop_at=None)
    first = w.runner().rotate(w.spec, wait=False)
    assert first.rotation.usage_grace == POLICY
    ((_, started),) = w.notes(AuditAction.STARTED)
    assert "held while used: quiet 60s, max 600s" in (started or "")
    w.clock.sleep(30)
    # The config changed meanwhile (usage-aware grace removed): the rotation keeps its own.
    w.spec = dataclasses.replace(w.spec, usage_grace=None)
    again = w.runner().rotate(w.spec, wait=False)
    assert again.rotation.step is Step.GRACE and w.notes(AuditAction.GRACE_HELD)
