"""Value objects of a rotation: its steps, its status, its persisted state, audit events.

A ``Rotation`` is exactly what SQL stores about one rotation; it never holds a secret
(key ids and fingerprints only). The in-memory secret of a freshly created
key lives in the runner, which is why a resumed rotation may have to discard and
recreate its key. The audit trail's words (``EventKind``, actions, results) live in
``rotator.core.vocabulary``.

A failure is fields: a ``Failure`` carries the step whose action failed, a machine-readable
``FailureCode`` and the message; ``reason_text`` alone words them as the stored ``reason``,
and nothing reads that text back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from rotator.core.grace import GracePolicy
from rotator.core.vocabulary import EventKind

__all__ = [
    "TERMINAL_STATUSES",
    "AuditEvent",
    "Failure",
    "FailureCode",
    "KeyRecord",
    "Rotation",
    "ScheduleFacts",
    "SecretRef",
    "Status",
    "Step",
    "StoredEvent",
    "key_name",
    "reason_text",
]

# The contract caps key names at 100 characters.
KEY_NAME_LIMIT = 100


class Step(StrEnum):
    PLAN = "plan"
    CREATE = "create"
    VERIFY = "verify"
    STORE = "store"
    GRACE = "grace"
    REVOKE = "revoke"
    ROLLBACK = "rollback"
    DONE = "done"


class Status(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


TERMINAL_STATUSES = frozenset({Status.COMPLETED, Status.ROLLED_BACK, Status.FAILED})


class FailureCode(StrEnum):
    # refusals at plan: nothing was changed (status failed)
    REFUSED = "refused"
    NO_CURRENT_KEY = "no_current_key"
    VAULT_UNREADABLE = "vault_unreadable"
    VAULT_REFUSED = "vault_refused"      # 401/403: rotator's Vault credentials or policy
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
    UNRECORDED = "unrecorded"      # a row from before failures were stored as fields
    CANCELLED = "cancelled"        # an operator's `rotator cancel` rolled it back

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


@dataclass(frozen=True, slots=True)
class SecretRef:
    """Where a target's key lives in Vault (KV v2): mount, path, and the field of it."""

    mount: str
    path: str
    field: str


@dataclass(frozen=True, slots=True)
class Rotation:
    rotation_id: str
    target: str
    service_account: str
    trigger: str                 # a ``Trigger``: manual, run_rotate, schedule, ...
    actor: str                   # who asked: user@host, or the daemon's replica id
    grace_seconds: float
    started_at: datetime
    step: Step = Step.PLAN
    status: Status = Status.RUNNING
    old_key_id: str | None = None
    old_version: int | None = None
    new_key_id: str | None = None
    new_fingerprint: str | None = None
    new_version: int | None = None
    grace_ends_at: datetime | None = None
    finished_at: datetime | None = None
    reason: str | None = None    # the words of ``failure`` (``reason_text``), or a note
    recreate_count: int = 0
    # ``reason`` is composed from these; a row from before they were stored has the text
    # only (``failure`` None), and is worded by that text whole.
    failure: Failure | None = None
    rollback_blocked: str | None = None     # why the rollback cannot finish yet
    manual_reason: str | None = None        # why an operator rotated (``--reason``)
    # Usage-aware grace, taken from the target when the rotation started (like
    # ``grace_seconds``); None: the old key goes when the window ends.
    usage_grace: GracePolicy | None = None
    # The provider and the Vault ref the rotation started with (revision 0009), so it can
    # be finished as it began when its target leaves the config (``app.orphans``), and is
    # never resumed against another path or provider; None on a row from before.
    provider: str | None = None
    vault_ref: SecretRef | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def grace_started_at(self) -> datetime | None:
        """When the grace window began (the new key stored): the same however long it is held."""
        if self.grace_ends_at is None:
            return None
        return self.grace_ends_at - timedelta(seconds=self.grace_seconds)

    @property
    def key_stored_at(self) -> datetime | None:
        """When a completed rotation's key went into Vault: the start of its grace window."""
        if self.status is not Status.COMPLETED:
            return None
        return self.grace_started_at or self.finished_at

    def evolve(self, **changes: object) -> Rotation:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One append-only row of the audit trail. Never holds key material."""

    rotation_id: str
    target: str
    step: str
    kind: EventKind
    action: str                     # an ``AuditAction``; str, so any stored row reads back
    result: str | None = None       # an ``AuditResult``: ok, error, unknown, ...
    key_id: str | None = None
    fingerprint: str | None = None
    vault_version: int | None = None
    request_id: str | None = None
    op_id: str | None = None        # pairs an intent with its outcome
    detail: str | None = None
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What the provider lists about a key (never its secret)."""

    key_id: str
    name: str
    created_at: datetime | None = None
    last_used_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An audit row as stored: the ``AuditEvent`` fields plus its ``id`` and ``at``."""

    id: int
    at: datetime
    rotation_id: str
    target: str
    step: str
    kind: EventKind
    action: str
    result: str | None
    key_id: str | None
    fingerprint: str | None
    vault_version: int | None
    request_id: str | None
    op_id: str | None
    detail: str | None
    # The lease generation of the holder that wrote the row (revision 0003); NULL before.
    lease_generation: int | None = None
    # Its place in the target's audit chain and its hash (revision 0004, ``audit_chain``).
    chain_seq: int | None = None
    chain_hash: str | None = None

    def to_event(self) -> AuditEvent:
        """The ``AuditEvent`` this row records (with its ``at``)."""
        return AuditEvent(
            rotation_id=self.rotation_id, target=self.target, step=self.step,
            kind=self.kind, action=self.action, result=self.result, key_id=self.key_id,
            fingerprint=self.fingerprint, vault_version=self.vault_version,
            request_id=self.request_id, op_id=self.op_id, detail=self.detail, at=self.at,
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: timestamps as ISO 8601, the kind as its string value."""
        return {
            "id": self.id, "at": self.at.isoformat(), "rotation_id": self.rotation_id,
            "target": self.target, "step": self.step, "kind": str(self.kind),
            "action": self.action, "result": self.result, "key_id": self.key_id,
            "fingerprint": self.fingerprint, "vault_version": self.vault_version,
            "request_id": self.request_id, "op_id": self.op_id, "detail": self.detail,
            "lease_generation": self.lease_generation, "chain_seq": self.chain_seq,
            "chain_hash": self.chain_hash,
        }


@dataclass(frozen=True, slots=True)
class ScheduleFacts:
    """What a target's schedule needs to know of its history, from one read."""

    last_completed: Rotation | None
    failures_since: int                  # failed or rolled back since that completion
    last_failure_at: datetime | None


def key_name(target: str, rotation_id: str) -> str:
    """The provider-side name of the key a rotation creates: found again after a crash."""
    suffix = f":{rotation_id}"
    head = f"rotator:{target}"[: KEY_NAME_LIMIT - len(suffix)]
    return head + suffix
