"""The failure code and message of every refusal and failed step, and the blocked reasons.

A rotation's ``failure`` is what operators and the metrics group failures by: each branch
of plan, create, verify and store has its own ``FailureCode``, and a blocked rollback or a
deferred revoke says why in ``rollback_blocked`` / ``reason``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from rotator.core.errors import (
    CasConflict,
    PermanentError,
    ProviderUnavailable,
    VaultError,
    VaultUnavailable,
)
from rotator.core.model import AuditEvent, Failure, FailureCode, Rotation, Status, Step
from rotator.core.ports import Identity, Lease
from rotator.core.secret import Secret
from rotator.core.vocabulary import AuditAction, AuditResult, EventKind
from tests.fakes import Crash
from tests.unit.test_runner import REF, World

REJECTED = Secret("cnt_not_a_real_key_at_all_000000")


def _no_secret(w: World) -> None:
    w.store.versions.clear()


def _sealed(w: World) -> None:
    w.store.fail["read"] = VaultUnavailable("sealed")


def _token_refused(w: World) -> None:
    w.store.fail["read"] = VaultError("permission denied", status=403)


def _rejected(w: World) -> None:
    w.store.put(REF, REJECTED)


def _unprobed(w: World) -> None:
    w.provider.fail["whoami"] = ProviderUnavailable("503")


def _other_account(w: World) -> None:
    w.store.put(REF, w.provider.seed("sa_2"))


REFUSALS: dict[str, tuple[Callable[[World], None], FailureCode, str]] = {
    "no_current_key": (_no_secret, FailureCode.NO_CURRENT_KEY,
                       "no key in Vault to rotate: no secret (path=count/app)"),
    "vault_unreadable": (_sealed, FailureCode.VAULT_UNREADABLE, "cannot read Vault: sealed"),
    "vault_refused": (_token_refused, FailureCode.VAULT_REFUSED,
                      "cannot read Vault: permission denied (status=403)"),
    "current_key_rejected": (_rejected, FailureCode.CURRENT_KEY_REJECTED,
                             "the key in Vault (version 2) does not authenticate at the "
                             "provider; refusing to rotate: fix or re-seed it first"),
    "current_key_unprobed": (_unprobed, FailureCode.CURRENT_KEY_UNPROBED,
                             "cannot probe the current key: 503"),
    "wrong_account": (_other_account, FailureCode.WRONG_ACCOUNT,
                      "the key in Vault belongs to service account sa_2, not sa_1"),
}


@pytest.mark.parametrize(("setup", "code", "message"), REFUSALS.values(), ids=REFUSALS)
def test_each_refusal_at_plan_has_its_code_and_changes_nothing(
        setup: Callable[[World], None], code: FailureCode, message: str) -> None:
    w = World()
    setup(w)
    rot = w.runner().rotate(w.spec).rotation
    assert (rot.status, rot.step) == (Status.FAILED, Step.DONE)
    assert rot.failure == Failure(Step.PLAN, code, message) and rot.reason == message
    assert "create_key" not in w.provider.calls and w.store.writes == 0
    assert [(e.kind, e.action, e.result, e.detail) for e in w.repo.recorded][1:] == [
        (EventKind.NOTE, AuditAction.FAILED, AuditResult.FAILED, message)]


def _after_plan(w: World, answer: Callable[[Secret], Identity]) -> None:
    """The provider's whoami answers ``answer`` for every key but the one Vault serves."""
    real = w.provider.whoami
    w.provider.whoami = (  # type: ignore[method-assign]
        lambda key: real(key) if key == w.first else answer(key))


def _raise(exc: Exception) -> Callable[[Secret], Identity]:
    def answer(_key: Secret) -> Identity:
        raise exc
    return answer


def _probe_answers(answer: Callable[[Secret], Identity]) -> Callable[[World], None]:
    return lambda w: _after_plan(w, answer)


def _fail_now(fake: str, call: str, exc: Exception) -> Callable[[World], None]:
    return lambda w: getattr(w, fake).fail.__setitem__(call, exc)


def _tamper(w: World) -> None:
    w.store.tamper_read_back = True


STEP_FAILURES: dict[str, tuple[Callable[[World], None], Step, FailureCode, str]] = {
    "create_failed": (_fail_now("provider", "create_key", ProviderUnavailable("503")),
                      Step.CREATE, FailureCode.CREATE_FAILED, "ProviderUnavailable: 503"),
    "probe_failed": (_probe_answers(_raise(PermanentError("403 forbidden"))), Step.VERIFY,
                     FailureCode.PROBE_FAILED, "probe failed: 403 forbidden"),
    "wrong_identity": (_probe_answers(lambda _key: Identity("sa_1", "key_9999", "req_w")),
                       Step.VERIFY, FailureCode.WRONG_IDENTITY,
                       "new key authenticates as sa_1/key_9999, expected sa_1/{new}"),
    "never_authenticated": (_probe_answers(_raise(ProviderUnavailable("503"))), Step.VERIFY,
                            FailureCode.NEVER_AUTHENTICATED,
                            "new key did not authenticate within 20s "
                            "(6 probes; last: ProviderUnavailable: 503)"),
    "store_failed": (_fail_now("store", "write", VaultUnavailable("down")), Step.STORE,
                     FailureCode.STORE_FAILED, "VaultUnavailable: down"),
    "read_back_mismatch": (_tamper, Step.STORE, FailureCode.READ_BACK_MISMATCH,
                           "read-back of Vault version 2 does not match the key written as "
                           "version 2"),
}


@pytest.mark.parametrize(("setup", "step", "code", "message"), STEP_FAILURES.values(),
                         ids=STEP_FAILURES)
def test_each_failed_step_has_its_code_and_rolls_back(
        setup: Callable[[World], None], step: Step, code: FailureCode, message: str) -> None:
    w = World()
    setup(w)
    rot = w.runner().rotate(w.spec).rotation
    assert rot.status is Status.ROLLED_BACK, rot.reason
    message = message.format(new=rot.new_key_id)
    assert rot.failure == Failure(step, code, message)
    assert rot.reason == f"{step.value}: {message}"
    w.assert_invariants()


def test_unreadable_vault_after_an_interrupted_write_is_store_unknown_and_blocks() -> None:
    w = World()
    w.store.crash_at = "write:after"
    with pytest.raises(Crash):
        w.runner("h1").rotate(w.spec)
    w.store.crash_at = None
    w.clock.sleep(120)
    w.store.fail["read"] = VaultUnavailable("sealed")
    rot = w.runner("h2").rotate(w.spec).rotation
    assert (rot.status, rot.step) == (Status.RUNNING, Step.ROLLBACK)
    assert rot.failure == Failure(Step.STORE, FailureCode.STORE_UNKNOWN,
                                  "cannot learn whether the Vault write landed: sealed")
    assert rot.rollback_blocked == "cannot read Vault: sealed"
    assert rot.reason == ("store: cannot learn whether the Vault write landed: sealed; "
                          "rollback blocked: cannot read Vault: sealed")


def _at_rollback(w: World, then: Callable[[], None]) -> None:
    """Run ``then`` once, when the rotation is saved at the rollback step."""
    save, done = w.repo.save_rotation, []

    def save_then(rot: Rotation, lease: Lease, ending: AuditEvent | None = None,
                  **more: Any) -> None:
        save(rot, lease, ending, **more)
        if rot.step is Step.ROLLBACK and not done:
            done.append(then())

    w.repo.save_rotation = save_then  # type: ignore[method-assign]


def _fail(fake: Any, call: str, exc: Exception) -> Callable[[], None]:
    return lambda: fake.fail.__setitem__(call, exc)


def _write_fails_after_the_first(w: World, exc: Exception) -> None:
    real, calls = w.store.write, itertools.count()

    def write(*args: Any) -> int:
        if next(calls):
            raise exc
        return real(*args)  # type: ignore[arg-type]

    w.store.write = write  # type: ignore[method-assign]


BLOCKS: dict[str, tuple[Callable[[World], None], str]] = {
    "list_keys": (lambda w: _at_rollback(w, _fail(w.provider, "list_keys",
                                                  ProviderUnavailable("503"))),
                  "cannot list the provider's keys: 503"),
    "whoami": (lambda w: _at_rollback(w, _fail(w.provider, "whoami",
                                               ProviderUnavailable("503"))),
               "cannot tell which key Vault serves: 503"),
    "delete_key": (lambda w: _at_rollback(w, _fail(w.provider, "delete_key",
                                                   ProviderUnavailable("503"))),
                   "cannot delete the new key {new}: 503"),
}


@pytest.mark.parametrize(("setup", "why"), BLOCKS.values(), ids=BLOCKS)
def test_each_blocked_rollback_after_verify_says_why(setup: Callable[[World], None],
                                                     why: str) -> None:
    w = World(never_authenticates=True)
    setup(w)
    rot = w.runner().rotate(w.spec).rotation
    assert (rot.status, rot.step) == (Status.RUNNING, Step.ROLLBACK)
    assert rot.rollback_blocked == why.format(new=rot.new_key_id)
    assert rot.failure is not None and rot.failure.code is FailureCode.NEVER_AUTHENTICATED


@pytest.mark.parametrize(("exc", "why"), [
    (CasConflict("check-and-set"), "Vault changed during the restore: check-and-set"),
    (VaultUnavailable("down"), "cannot restore Vault version 1: down"),
])
def test_a_restore_that_cannot_be_written_blocks_the_rollback(exc: Exception,
                                                              why: str) -> None:
    w = World()
    _tamper(w)
    _write_fails_after_the_first(w, exc)
    rot = w.runner().rotate(w.spec).rotation
    assert (rot.status, rot.step, rot.rollback_blocked) == (Status.RUNNING, Step.ROLLBACK, why)
    assert rot.failure is not None and rot.failure.code is FailureCode.READ_BACK_MISMATCH


def test_revoke_deferred_when_the_served_key_cannot_be_told() -> None:
    w = World()
    rot = w.runner().rotate(w.spec, wait=False).rotation
    w.clock.sleep(30)
    w.provider.fail["whoami"] = ProviderUnavailable("503")
    done = w.runner().rotate(w.spec).rotation
    assert done.status is Status.COMPLETED and w.provider.deleted == []
    assert done.reason == f"old key {rot.old_key_id} queued for cleanup: 503"
    assert [c.reason for c in w.repo.cleanups.values()] == ["503"]
