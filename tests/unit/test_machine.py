"""Every transition of the pure state machine, failure branches included."""

from __future__ import annotations

from datetime import timedelta
from typing import get_args

import pytest

from rotator.core import machine as m
from rotator.core.machine import Action
from rotator.core.model import Failure, FailureCode, KeyRecord, Rotation, Status, Step, key_name
from tests.fakes import T0


def rot(step: Step = Step.PLAN, **kw: object) -> Rotation:
    base = Rotation(rotation_id="rot_1", target="t", service_account="sa", trigger="manual",
                    actor="me", grace_seconds=60, started_at=T0, step=step)
    return base.evolve(**kw)


def test_plan_moves_to_create_with_old_key() -> None:
    nxt = m.advance(rot(), m.Planned("key_old", 3), T0)
    assert (nxt.step, nxt.old_key_id, nxt.old_version) == (Step.CREATE, "key_old", 3)


def test_plan_refused_fails_without_side_effects() -> None:
    nxt = m.advance(rot(), m.Refused("vault key dead"), T0)
    assert (nxt.step, nxt.status, nxt.reason) == (Step.DONE, Status.FAILED, "vault key dead")
    assert nxt.finished_at == T0 and nxt.is_terminal


def test_create_records_new_key() -> None:
    nxt = m.advance(rot(Step.CREATE), m.KeyCreated("key_new", "sha256:ab"), T0)
    assert (nxt.step, nxt.new_key_id, nxt.new_fingerprint) == (Step.VERIFY, "key_new",
                                                               "sha256:ab")


@pytest.mark.parametrize("step", [Step.CREATE, Step.VERIFY, Step.STORE])
def test_failure_after_plan_rolls_back(step: Step) -> None:
    nxt = m.advance(rot(step), m.StepFailed("boom"), T0)
    assert nxt.step is Step.ROLLBACK and nxt.status is Status.RUNNING
    assert nxt.reason == f"{step.value}: boom"


def test_verified_goes_to_store() -> None:
    assert m.advance(rot(Step.VERIFY), m.Verified(), T0).step is Step.STORE


def test_stored_starts_grace_with_persisted_deadline() -> None:
    nxt = m.advance(rot(Step.STORE), m.Stored(4), T0)
    assert nxt.step is Step.GRACE and nxt.new_version == 4
    assert nxt.grace_ends_at == T0 + timedelta(seconds=60)


@pytest.mark.parametrize("step", [Step.VERIFY, Step.STORE])
def test_secret_lost_starts_over_then_gives_up(step: Step) -> None:
    r = rot(step, new_key_id="k", new_fingerprint="f")
    for count in range(1, m.MAX_RECREATES + 1):
        r = m.advance(r, m.SecretLost(), T0)
        assert (r.step, r.recreate_count, r.new_key_id) == (Step.CREATE, count, None)
        r = r.evolve(step=step)
    r = m.advance(r, m.SecretLost(), T0)
    assert r.step is Step.ROLLBACK and "gave up" not in (r.reason or "")
    assert "giving up" in (r.reason or "")


def test_grace_cannot_end_early() -> None:
    r = rot(Step.GRACE, grace_ends_at=T0 + timedelta(seconds=5))
    with pytest.raises(m.InvalidTransition, match=r"^grace of rot_1 is not over$"):
        m.advance(r, m.GraceElapsed(), T0)
    assert m.advance(r, m.GraceElapsed(), T0 + timedelta(seconds=5)).step is Step.REVOKE


def test_revoke_completes() -> None:
    nxt = m.advance(rot(Step.REVOKE), m.Revoked(), T0)
    assert (nxt.status, nxt.reason) == (Status.COMPLETED, None)


def test_revoke_deferred_completes_with_cleanup_note() -> None:
    nxt = m.advance(rot(Step.REVOKE, old_key_id="k1"), m.RevokeDeferred("503"), T0)
    assert nxt.status is Status.COMPLETED and "k1 queued for cleanup" in (nxt.reason or "")


def test_rollback_of_a_row_without_failure_or_reason_says_rolled_back() -> None:
    # a row from before the failure fields were stored, and without a reason either
    done = m.advance(rot(Step.ROLLBACK), m.RolledBack(), T0)
    assert (done.status, done.reason) == (Status.ROLLED_BACK, "rolled back")
    assert done.failure == Failure.unrecorded("rolled back")


def test_rollback_outcomes() -> None:
    r = rot(Step.ROLLBACK, reason="verify: never authenticated", new_key_id="k2")
    done = m.advance(r, m.RolledBack(), T0)
    assert (done.status, done.reason) == (Status.ROLLED_BACK, "verify: never authenticated")
    pending = m.advance(r, m.RolledBack(cleanup_pending=True), T0)
    assert "k2 queued for cleanup" in (pending.reason or "")
    blocked = m.advance(r, m.RollbackBlocked("vault down"), T0)
    assert blocked.step is Step.ROLLBACK and blocked.status is Status.RUNNING
    again = m.advance(blocked, m.RollbackBlocked("vault still down"), T0)
    assert again.reason == "verify: never authenticated; rollback blocked: vault still down"


@pytest.mark.parametrize(("step", "outcome"), [
    (Step.PLAN, m.Verified()), (Step.CREATE, m.Stored(1)), (Step.VERIFY, m.Revoked()),
    (Step.GRACE, m.StepFailed("x")), (Step.REVOKE, m.StepFailed("x")),
    (Step.DONE, m.Planned("k", 1)), (Step.ROLLBACK, m.Verified()),
])
def test_invalid_transitions_raise(step: Step, outcome: m.Outcome) -> None:
    with pytest.raises(m.InvalidTransition):
        m.advance(rot(step), outcome, T0)


@pytest.mark.parametrize("step", [Step.PLAN, Step.CREATE])
def test_a_rate_limit_past_the_budget_parks_at_the_step_and_its_words_go_with_the_park(
        step: Step) -> None:
    r = rot(step, old_key_id="k0", old_version=1)
    parked = m.advance(r, m.Throttled("list_keys: Count is rate limiting"), T0)
    assert (parked.step, parked.status, parked.failure) == (step, Status.RUNNING, None)
    assert parked.reason == (f"rate limited at {step.value}, parked: "
                             "list_keys: Count is rate limiting")
    assert parked.finished_at is None and parked.new_key_id is None
    resumed = m.advance(parked, m.Planned("k0", 1) if step is Step.PLAN
                        else m.KeyCreated("k1", "f"), T0)
    assert resumed.reason is None


# The whole transition table: the outcomes each step may be followed by, and no other.
TRANSITIONS: dict[Step, set[type]] = {
    Step.PLAN: {m.Planned, m.Refused, m.Throttled},
    Step.CREATE: {m.KeyCreated, m.StepFailed, m.Throttled},
    Step.VERIFY: {m.Verified, m.StepFailed, m.SecretLost},
    Step.STORE: {m.Stored, m.StepFailed, m.SecretLost},
    Step.GRACE: {m.GraceElapsed, m.GraceHeld},
    Step.REVOKE: {m.Revoked, m.RevokeDeferred},
    Step.ROLLBACK: {m.RolledBack, m.RollbackBlocked},
    Step.DONE: set(),
}
ONE_OF_EACH: list[m.Outcome] = [
    m.Planned("k", 1), m.Refused("x"), m.Throttled("429"), m.KeyCreated("k", "f"),
    m.Verified(), m.Stored(2), m.SecretLost(), m.StepFailed("x"), m.GraceElapsed(),
    m.GraceHeld(T0 + timedelta(seconds=5)), m.Revoked(), m.RevokeDeferred("x"),
    m.RolledBack(), m.RollbackBlocked("x"),
]


def test_the_transition_table_is_exactly_this() -> None:
    assert {type(o) for o in ONE_OF_EACH} == set(get_args(m.Outcome))
    assert set(TRANSITIONS) == set(Step)
    for step, allowed in TRANSITIONS.items():
        for outcome in ONE_OF_EACH:
            r = rot(step, grace_ends_at=T0, old_key_id="k0")
            if type(outcome) in allowed:
                assert m.advance(r, outcome, T0) != r
                continue
            with pytest.raises(m.InvalidTransition) as raised:
                m.advance(r, outcome, T0)
            assert str(raised.value) == (f"{type(outcome).__name__} cannot follow step "
                                         f"{step.value} of rotation rot_1")


@pytest.mark.parametrize(("step", "holds", "expected"), [
    (Step.PLAN, False, Action.PLAN), (Step.CREATE, False, Action.CREATE),
    (Step.VERIFY, True, Action.VERIFY), (Step.VERIFY, False, Action.DISCARD),
    (Step.STORE, True, Action.STORE), (Step.STORE, False, Action.RECONCILE_STORE),
    (Step.REVOKE, False, Action.REVOKE), (Step.ROLLBACK, False, Action.ROLLBACK),
])
def test_next_action(step: Step, holds: bool, expected: Action) -> None:
    assert m.next_action(rot(step), T0, holds) is expected


def test_next_action_in_grace_and_when_done() -> None:
    r = rot(Step.GRACE, grace_ends_at=T0 + timedelta(seconds=1))
    assert m.next_action(r, T0, False) is Action.WAIT
    assert m.next_action(r, T0 + timedelta(seconds=1), False) is Action.END_GRACE
    done = m.advance(rot(), m.Refused("x"), T0)
    assert m.next_action(done, T0, False) is Action.NONE
    # either half of "done" is enough: a finished status in any step, or the step itself
    assert m.next_action(rot(Step.VERIFY, status=Status.FAILED), T0, True) is Action.NONE
    assert m.next_action(rot(Step.DONE), T0, False) is Action.NONE
    with pytest.raises(AssertionError, match=r"^grace without a deadline$"):
        m.next_action(rot(Step.GRACE), T0, False)


def test_deletable_when_full_protects_current_and_in_use() -> None:
    keys = [KeyRecord("a", "x", T0), KeyRecord("b", "x", T0 - timedelta(days=2)),
            KeyRecord("c", "mine", T0), KeyRecord("d", "x", None)]
    got = m.deletable_when_full(keys, {"a"}, "mine")
    assert [k.key_id for k in got] == ["d", "b"]
    assert m.deletable_when_full(keys[:1], {"a"}, "mine") == []


def test_vault_holds_new_key_needs_fingerprint_and_newer_version() -> None:
    r = rot(Step.STORE, old_version=3, new_fingerprint="sha256:aa")
    assert m.vault_holds_new_key(r, 4, "sha256:aa")
    assert not m.vault_holds_new_key(r, 4, "sha256:bb")
    assert not m.vault_holds_new_key(r, 3, "sha256:aa")
    assert not m.vault_holds_new_key(rot(Step.STORE), 4, "sha256:aa")
    assert m.vault_holds_new_key(r, 4, "sha256:bb", written_by="rot_1")
    assert not m.vault_holds_new_key(r, 4, "sha256:bb", written_by="rot_other")


def test_key_name_fits_the_limit_and_keeps_the_rotation_id() -> None:
    name = key_name("t" * 200, "rot_20261127T000000_abcdef")
    assert len(name) == 100 and name.endswith(":rot_20261127T000000_abcdef")


@pytest.mark.parametrize("step", [Step.PLAN, Step.CREATE, Step.VERIFY, Step.STORE])
def test_a_cancel_before_grace_rolls_back_naming_who_and_why(step: Step) -> None:
    running = rot(step)
    assert m.cancel_refusal(running) is None
    nxt = m.cancelled(running, "alice@host", "provider outage")
    assert nxt.step is Step.ROLLBACK and nxt.status is Status.RUNNING
    assert nxt.failure == Failure(step, FailureCode.CANCELLED,
                                  "cancelled by alice@host: provider outage")
    assert nxt.reason == "cancelled by alice@host: provider outage"
    done = m.advance(nxt, m.RolledBack(), T0)
    assert done.status is Status.ROLLED_BACK and done.reason == nxt.reason


@pytest.mark.parametrize(("running", "words"), [
    (rot(Step.GRACE, new_key_id="key_new", new_version=4), "is in Vault (version 4)"),
    (rot(Step.REVOKE, new_key_id="key_new", new_version=4), "let it finish"),
    (rot(Step.ROLLBACK, rollback_blocked="Vault sealed"), "blocked: Vault sealed"),
    (rot(Step.DONE, status=Status.COMPLETED), "already ended (completed)"),
])
def test_a_cancel_is_refused_once_the_new_key_may_be_served(running: Rotation,
                                                             words: str) -> None:
    refusal = m.cancel_refusal(running)
    assert refusal is not None and words in refusal
