"""The steps' rarer branches, driven one call at a time against the fakes.

A create whose first answer was lost, an account full of keys no one may delete, a store
that finds Vault already written by this rotation or by someone else: each is a race the
whole flows reach only by chance, so each test builds the rotation at its step and checks
the outcome, the audit rows and the log event it leaves.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from structlog.testing import capture_logs

from rotator.core import machine as m
from rotator.core.errors import CasConflict, RateLimited
from rotator.core.model import FailureCode, Rotation, Step, key_name
from rotator.core.secret import Secret
from rotator.core.vocabulary import AuditAction, EventKind
from rotator.engine.steps import StepRunner
from tests.fakes import T0
from tests.unit.test_runner import REF
from tests.unit.test_runner_behaviour import spy
from tests.unit.test_unwind import RID, Bench, NotesAtOnce

CAS_LOST = f"check-and-set (path={REF.path})"   # FakeStore's CasConflict, as str() shows it


class Steps(Bench):
    """A Bench with a StepRunner under the same lease."""

    def __init__(self, **provider_kw: object) -> None:
        super().__init__(**provider_kw)
        trail = NotesAtOnce(self.w.repo, self.w.clock, self.lease, lambda: None)
        self.steps = StepRunner(self.w.provider, self.w.store, self.w.repo, self.w.clock,
                                trail, self.fresh)

    def rows(self) -> list[tuple[str, str, str | None, str | None]]:
        """(kind, action, key id, detail) of every row recorded so far."""
        return [(e.kind.value, e.action, e.key_id, e.detail) for e in self.w.repo.recorded]

    def at_store(self) -> tuple[Rotation, Secret]:
        """A rotation in store holding its verified key's secret, Vault still at version 1."""
        new_id, secret = self.key(key_name("app", RID))
        rot = self.rotation(Step.STORE, new_key_id=new_id, new_fingerprint=secret.fingerprint)
        self.fresh[RID] = secret
        return rot, secret


# -- a provider rate-limiting past the retry budget -------------------------------------
@pytest.mark.parametrize("call", ["list_keys", "create_key"])
def test_a_create_rate_limited_past_the_budget_is_throttled_not_failed(call: str) -> None:
    s = Steps()
    rot = s.rotation(Step.CREATE)
    s.w.provider.fail[call] = RateLimited(f"{call}: Count is rate limiting", 30.0)
    outcome = s.steps.create(rot, s.w.spec)
    assert outcome == m.Throttled(f"{call}: Count is rate limiting")
    assert RID not in s.fresh          # no secret held: nothing a park would lose


def test_a_plan_whose_probe_is_rate_limited_is_throttled_not_refused() -> None:
    s = Steps()
    rot = s.rotation(Step.PLAN)
    s.w.provider.fail["whoami"] = RateLimited("whoami: Count is rate limiting", 30.0)
    assert s.steps.plan(rot, s.w.spec) == m.Throttled(
        "probe of the current key: whoami: Count is rate limiting")


# -- create -----------------------------------------------------------------------------
def test_a_create_answered_at_its_first_attempt_lists_the_keys_once() -> None:
    s = Steps()
    rot = s.rotation(Step.CREATE)
    create = s.w.provider.create_key
    s.w.provider.create_key = (  # type: ignore[method-assign]
        lambda *args: replace(create(*args), first_attempt=True))
    assert isinstance(s.steps.create(rot, s.w.spec), m.KeyCreated)
    assert s.w.provider.calls.count("list_keys") == 1


def test_create_deletes_the_key_a_create_whose_answer_was_lost_made() -> None:
    s = Steps(key_limit=4)
    rot = s.rotation(Step.CREATE)
    name = key_name("app", RID)
    lost: list[str] = []
    create = s.w.provider.create_key

    def create_twice(account: str, key_name: str, auth: Secret) -> Any:
        lost.append(s.w.provider._make(account, key_name).key_id)   # the first answer lost
        return create(account, key_name, auth)

    s.w.provider.create_key = create_twice  # type: ignore[method-assign]
    outcome = s.steps.create(rot, s.w.spec)
    assert isinstance(outcome, m.KeyCreated)
    why = "made by a create attempt whose answer was lost, then retried: its secret was never seen"
    assert s.rows() == [
        ("intent", "create_key", None, f"name {name}"),
        ("outcome", "create_key", outcome.key_id,
         f"name {name}; fingerprint {outcome.fingerprint}"),
        ("intent", "delete_key", lost[0], why),
        ("outcome", "delete_key", lost[0], None),
    ]
    assert s.accounts == [("sa_1", lost[0])]


def test_create_on_a_full_account_whose_keys_are_all_protected_fails_naming_it() -> None:
    s = Steps(key_limit=2)
    used = s.w.provider.key_of(s.w.provider.seed("sa_1"))   # the account's second key
    s.w.repo.by_id["rot_other"] = Rotation(
        rotation_id="rot_other", target="other", service_account="sa_1", trigger="manual",
        actor="cli", grace_seconds=30, started_at=T0, step=Step.GRACE, new_key_id=used)
    asked = spy(s.w.repo, "protected_key_ids", lambda account, rotation_id: (account,
                                                                            rotation_id))
    rot = s.rotation(Step.CREATE)
    assert s.steps.create(rot, s.w.spec) == m.StepFailed(
        "KeyLimitReached: key limit reached and every key is current or in use by a "
        "rotation; delete one by hand (service_account=sa_1)", FailureCode.CREATE_FAILED)
    assert asked == [("sa_1", RID)]
    assert s.accounts == []


# -- store ------------------------------------------------------------------------------
def test_store_after_someone_elses_write_fails_as_a_lost_check_and_set() -> None:
    s = Steps()
    rot, _ = s.at_store()
    s.w.store.write(REF, Secret("written-by-hand"), 1, {})
    assert s.steps.store(rot, s.w.spec) == m.StepFailed(
        f"Vault changed since plan (check-and-set lost): {CAS_LOST}", FailureCode.CAS_LOST)


def test_store_finding_its_own_landed_write_keeps_that_version() -> None:
    s = Steps()
    rot, secret = s.at_store()
    s.w.store.write(REF, secret, 1, {"rotator_rotation_id": RID,    # the answer was lost
                                     "rotator_key_id": rot.new_key_id or ""})
    with capture_logs() as logs:
        assert s.steps.store(rot, s.w.spec) == m.Stored(version=2)
    assert logs == [{"event": "vault_holds_earlier_attempt", "log_level": "warning",
                     "vault_version": 2, "key_id": rot.new_key_id}]
    assert s.w.store.writes == 1 and RID not in s.fresh
    assert [(e.kind, e.action, e.vault_version) for e in s.w.repo.recorded][-1] == (
        EventKind.NOTE, AuditAction.READ_BACK, 2)


def test_store_replacing_an_earlier_attempt_that_loses_the_check_and_set_fails() -> None:
    s = Steps()
    rot, _ = s.at_store()
    s.w.store.write(REF, Secret("an-earlier-attempts-key"), 1, {"rotator_rotation_id": RID})
    s.w.store.fail["write"] = CasConflict("check-and-set", path=REF.path)
    assert s.steps.store(rot, s.w.spec) == m.StepFailed(
        f"Vault changed since plan (check-and-set lost): {CAS_LOST}", FailureCode.CAS_LOST)
    assert s.w.store.calls == ["write", "write", "read", "write"]


def test_store_with_a_read_back_failure_injected_fails_the_store(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROTATOR_TEST_HOOKS", "1")
    monkeypatch.setenv("ROTATOR_TEST_FAIL_AT", "read_back")
    s = Steps()
    rot, _ = s.at_store()
    assert s.steps.store(rot, s.w.spec) == m.StepFailed(
        "VaultUnavailable: injected failure at read_back (ROTATOR_TEST_FAIL_AT)",
        FailureCode.STORE_FAILED)


# -- plan -------------------------------------------------------------------------------
def test_plan_refuses_a_vault_key_that_does_not_authenticate_and_logs_it() -> None:
    s = Steps()
    s.w.store.put(REF, Secret("cnt_revoked_by_hand"))            # Vault version 2
    with capture_logs() as logs:
        outcome = s.steps.plan(s.rotation(Step.PLAN), s.w.spec)
    assert outcome == m.Refused(
        "the key in Vault (version 2) does not authenticate at the provider; refusing to "
        "rotate: fix or re-seed it first", FailureCode.CURRENT_KEY_REJECTED)
    assert logs == [{"event": "vault_key_does_not_authenticate", "log_level": "error",
                     "vault_version": 2}]
