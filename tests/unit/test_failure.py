"""A failure travels as fields (step, code, message); its ``reason`` text is only composed.

The texts below are the ``reason`` values in ``tests/data/rows_written_before_vocabulary
.json``, written before failures had fields: ``reason_text`` must keep producing them.
"""

from __future__ import annotations

import pytest

from rotator.core import machine as m
from rotator.core.errors import VaultUnavailable
from rotator.core.model import Failure, FailureCode, Rotation, Status, Step, reason_text
from rotator.daemon.metrics import failure_reason
from tests.fakes import T0
from tests.unit.test_runner import World


def rot(step: Step, **kw: object) -> Rotation:
    return Rotation(rotation_id="r1", target="app", service_account="sa", trigger="manual",
                    actor="me", grace_seconds=60, started_at=T0, step=step).evolve(**kw)


@pytest.mark.parametrize(("failure", "extra", "stored"), [
    (Failure(Step.VERIFY, FailureCode.NEVER_AUTHENTICATED,
             "new key did not authenticate within 5s (4 probes; last: 401: not "
             "authenticated (yet))"), {},
     "verify: new key did not authenticate within 5s (4 probes; last: 401: not "
     "authenticated (yet))"),
    (Failure(Step.PLAN, FailureCode.NO_CURRENT_KEY,
             "no key in Vault to rotate: no secret (path=count/refused)"), {},
     "no key in Vault to rotate: no secret (path=count/refused)"),
    (Failure(Step.STORE, FailureCode.CAS_LOST,
             "Vault changed since plan (check-and-set lost): cas"), {},
     "store: Vault changed since plan (check-and-set lost): cas"),
    (Failure(Step.STORE, FailureCode.STORE_FAILED, "VaultUnavailable: down"),
     {"rollback_blocked": "cannot read Vault: down"},
     "store: VaultUnavailable: down; rollback blocked: cannot read Vault: down"),
    (Failure(Step.VERIFY, FailureCode.SECRET_LOST_TOO_OFTEN,
             "lost the new key's secret 4 times (restarts); giving up"), {},
     "lost the new key's secret 4 times (restarts); giving up"),
    (Failure(Step.CREATE, FailureCode.CREATE_FAILED, "ProviderUnavailable: 503"),
     {"cleanup_pending": True, "new_key_id": "k2"},
     "create: ProviderUnavailable: 503; new key k2 queued for cleanup"),
    (Failure.unrecorded("verify: x; rollback blocked: y"), {},
     "verify: x; rollback blocked: y"),
])
def test_reason_text_words_failures_as_they_were_always_stored(
        failure: Failure, extra: dict[str, object], stored: str) -> None:
    assert reason_text(failure, **extra) == stored  # type: ignore[arg-type]


def test_a_step_failure_keeps_its_fields_next_to_the_text() -> None:
    nxt = m.advance(rot(Step.VERIFY), m.StepFailed("never", FailureCode.NEVER_AUTHENTICATED), T0)
    assert nxt.failure == Failure(Step.VERIFY, FailureCode.NEVER_AUTHENTICATED, "never")
    assert nxt.reason == "verify: never"
    refused = m.advance(rot(Step.PLAN), m.Refused("dead", FailureCode.CURRENT_KEY_REJECTED), T0)
    assert refused.failure == Failure(Step.PLAN, FailureCode.CURRENT_KEY_REJECTED, "dead")
    assert (refused.status, refused.reason) == (Status.FAILED, "dead")


def test_a_blocked_rollback_replaces_its_suffix_without_reading_the_text() -> None:
    # A message holding the separator itself: splitting the text would have cut it.
    failing = m.advance(rot(Step.STORE), m.StepFailed("a; rollback blocked: b"), T0)
    blocked = m.advance(failing, m.RollbackBlocked("one"), T0)
    again = m.advance(blocked, m.RollbackBlocked("two"), T0)
    assert again.reason == "store: a; rollback blocked: b; rollback blocked: two"
    assert (again.failure, again.rollback_blocked) == (failing.failure, "two")
    done = m.advance(again, m.RolledBack(), T0)
    assert done.reason == again.reason and done.failure == failing.failure


def test_metrics_take_the_step_from_the_failure_not_from_the_text() -> None:
    # The text says verify; the field says store: the field wins, nothing is parsed.
    rolled = rot(Step.DONE, status=Status.ROLLED_BACK, reason="verify: x",
                 failure=Failure(Step.STORE, FailureCode.STORE_FAILED, "x"))
    assert failure_reason(rolled, "rollback") == "store"
    gave_up = rolled.evolve(failure=Failure(Step.VERIFY, FailureCode.SECRET_LOST_TOO_OFTEN, "x"))
    assert failure_reason(gave_up, "rollback") == "other"
    # A row written before failures were stored as fields has the text only: "other".
    assert failure_reason(rolled.evolve(failure=None), "rollback") == "other"
    refused = rot(Step.DONE, status=Status.FAILED, reason="dead")
    assert failure_reason(refused, "plan") == "plan"


def test_another_process_resumes_a_blocked_rollback_from_its_stored_fields() -> None:
    """A replica or a restart takes over a blocked rollback: no runner state carries it."""
    w = World()
    w.store.fail["write"] = VaultUnavailable("down")
    real_write = w.store.write

    def write_then_outage(*args: object, **kw: object) -> int:
        w.store.fail["read"] = VaultUnavailable("down")
        return real_write(*args, **kw)  # type: ignore[arg-type]

    w.store.write = write_then_outage  # type: ignore[method-assign]
    first = w.runner().rotate(w.spec, wait=False).rotation
    assert first.step is Step.ROLLBACK
    second = w.runner().rotate(w.spec, wait=False).rotation   # a new process
    assert second.reason == first.reason == (
        "store: VaultUnavailable: down; rollback blocked: cannot read Vault: down")
    assert second.failure == Failure(Step.STORE, FailureCode.STORE_FAILED,
                                     "VaultUnavailable: down")
    del w.store.fail["read"]
    del w.store.fail["write"]
    done = w.runner().rotate(w.spec).rotation
    assert done.status is Status.ROLLED_BACK and done.reason == first.reason
    assert failure_reason(done, "rollback") == "store"
