"""Value objects of a rotation: its steps, its status, its persisted state, audit events.

A ``Rotation`` is what SQL stores about one rotation, plus the fields of its failure,
which SQL keeps only as the ``reason`` text (they do not take part in equality); it never
holds a secret (key ids and fingerprints only). The in-memory secret of a freshly created
key lives in the runner, which is why a resumed rotation may have to discard and
recreate its key. The audit trail's words (``EventKind``, actions, results) live in
``rotator.core.vocabulary``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rotator.core.failure import Failure
    from rotator.core.vocabulary import EventKind

__all__ = [
    "TERMINAL_STATUSES",
    "AuditEvent",
    "Rotation",
    "Status",
    "Step",
    "key_name",
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


@dataclass(frozen=True, slots=True)
class Rotation:
    rotation_id: str
    target: str
    service_account: str
    trigger: str                 # "manual" or "schedule"
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
    # Not stored: ``reason`` is. Set when this process saw the failure happen.
    failure: Failure | None = field(default=None, compare=False)
    rollback_blocked: str | None = field(default=None, compare=False)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def key_stored_at(self) -> datetime | None:
        """When a completed rotation's key went into Vault: the start of its grace window."""
        if self.status is not Status.COMPLETED:
            return None
        if self.grace_ends_at is None:
            return self.finished_at
        return self.grace_ends_at - timedelta(seconds=self.grace_seconds)

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


def key_name(target: str, rotation_id: str) -> str:
    """The provider-side name of the key a rotation creates: found again after a crash."""
    suffix = f":{rotation_id}"
    head = f"rotator:{target}"[: KEY_NAME_LIMIT - len(suffix)]
    return head + suffix
