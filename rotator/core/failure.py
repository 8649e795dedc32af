"""Why a rotation failed, as fields, and the one function that words it as ``reason``.

A ``Failure`` carries the step whose action failed, a machine-readable ``FailureCode``
and the human message. ``reason_text`` is the only place the ``rotations.reason`` text
of a failure is composed; nothing reads that text back: the metrics take the step from
the ``Failure`` and a blocked rollback swaps its suffix by composing the text again.

The fields are not stored (SQL keeps the text only, as it always has). A rotation read
back from SQL by another process carries an ``UNRECORDED`` failure holding that text;
see ``Runner`` for how one process keeps its own rotations' fields across runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rotator.core.model import Step

__all__ = ["Failure", "FailureCode", "reason_text"]


class FailureCode(StrEnum):
    # refusals at plan: nothing was changed (status failed)
    REFUSED = "refused"
    NO_CURRENT_KEY = "no_current_key"
    VAULT_UNREADABLE = "vault_unreadable"
    CURRENT_KEY_REJECTED = "current_key_rejected"
    CURRENT_KEY_UNPROBED = "current_key_unprobed"
    WRONG_ACCOUNT = "wrong_account"
    # an action of create, verify or store failed: the rotation rolls back
    STEP_FAILED = "step_failed"
    CREATE_FAILED = "create_failed"
    PROBE_FAILED = "probe_failed"
    WRONG_IDENTITY = "wrong_identity"
    NEVER_AUTHENTICATED = "never_authenticated"
    CAS_LOST = "cas_lost"
    STORE_FAILED = "store_failed"
    READ_BACK_MISMATCH = "read_back_mismatch"
    STORE_UNKNOWN = "store_unknown"
    # not one action's failure
    SECRET_LOST_TOO_OFTEN = "secret_lost_too_often"  # noqa: S105  (restarts before store)
    UNRECORDED = "unrecorded"      # read back from SQL, which keeps only the text

    @property
    def names_step(self) -> bool:
        """Whether the reason starts with the step: only an action's failure does."""
        return self in _STEP_FAILURES


_STEP_FAILURES = frozenset({
    FailureCode.STEP_FAILED, FailureCode.CREATE_FAILED, FailureCode.PROBE_FAILED,
    FailureCode.WRONG_IDENTITY, FailureCode.NEVER_AUTHENTICATED, FailureCode.CAS_LOST,
    FailureCode.STORE_FAILED, FailureCode.READ_BACK_MISMATCH, FailureCode.STORE_UNKNOWN,
})


@dataclass(frozen=True, slots=True)
class Failure:
    step: Step | None        # the step whose action failed; None when unrecorded
    code: FailureCode
    message: str

    @classmethod
    def unrecorded(cls, text: str) -> Failure:
        """A failure known only by its stored text: the text is kept whole, never split."""
        return cls(None, FailureCode.UNRECORDED, text)


def reason_text(failure: Failure, *, rollback_blocked: str | None = None,
                cleanup_pending: bool = False, new_key_id: str | None = None) -> str:
    """The ``reason`` of a failed or rolling-back rotation, worded as it is stored.

    ``rollback_blocked``: why the rollback cannot finish yet (replaced on every try, never
    accumulated). ``cleanup_pending``: the rollback queued ``new_key_id`` for deletion.
    """
    text = failure.message
    if failure.code.names_step and failure.step is not None:
        text = f"{failure.step.value}: {text}"
    if rollback_blocked is not None:
        text += f"; rollback blocked: {rollback_blocked}"
    if cleanup_pending:
        text += f"; new key {new_key_id} queued for cleanup"
    return text
