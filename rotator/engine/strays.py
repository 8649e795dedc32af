"""Deleting stray keys (``rotator reconcile --fix``): keys no rotation accounts for.

Which keys are stray is decided by the caller from reads made under the leases of every
target of the account; this module only deletes them, each through the audit trail (an
intent row before the call, an outcome row after, the reason and who asked in the
intent), under the lease of the target the key is reported for.

A reconcile run has no rotation: its rows carry a run id of their own (``rec_…``) in
``rotation_id``, so they group together in the trail and no ``rotations`` row, status or
invariant of a rotation ever counts them.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime

from rotator.core.model import KeyRecord, Rotation, Step, StoredEvent
from rotator.core.ports import Clock, Deletion, KeyProvider, Lease, RotationRepository
from rotator.core.secret import Secret
from rotator.core.vocabulary import AuditAction, EventKind
from rotator.engine.audit_trail import AuditTrail
from rotator.engine.step_base import deletion_result

__all__ = ["RECONCILE_TRIGGER", "StrayDeleter", "new_reconcile_id"]

RECONCILE_TRIGGER = "reconcile"


def new_reconcile_id(now: datetime) -> str:
    return f"rec_{now:%Y%m%dT%H%M%S}_{secrets.token_hex(3)}"


class StrayDeleter:
    """Deletes the stray keys of one account, audited under one target's lease."""

    def __init__(self, provider: KeyProvider, repo: RotationRepository, clock: Clock,
                 lease: Lease, confirm: Callable[[], None], *, run_id: str,
                 service_account: str, actor: str) -> None:
        self._provider = provider
        self._trail = AuditTrail(repo, clock, lease, confirm)
        # The run, as the trail's rows name it: never inserted as a rotation.
        self._run = Rotation(
            rotation_id=run_id, target=lease.target, service_account=service_account,
            trigger=RECONCILE_TRIGGER, actor=actor, grace_seconds=0.0,
            started_at=clock.now(), step=Step.DONE)

    def close_interrupted(self, events: Iterable[StoredEvent]) -> int:
        """Give an ``unknown`` outcome to the deletions an earlier run left undecided (the
        process killed mid-call), so that the target keeps no open intent, which every
        later take-over of its lease would wait out; returns how many were closed."""
        closed = {e.op_id for e in events if e.kind is EventKind.OUTCOME}
        runs = sorted({e.rotation_id for e in events if e.action == AuditAction.DELETE_STRAY
                       and e.kind is EventKind.INTENT and e.op_id not in closed})
        return sum(self._trail.close_open_intents(replace(self._run, rotation_id=run))
                   for run in runs)

    def delete(self, key: KeyRecord, why: str, auth: Secret) -> Deletion:
        """Delete ``key``; a ``RotatorError`` (its outcome row written) if it failed."""
        return self._trail.side_effect(
            self._run, AuditAction.DELETE_STRAY,
            lambda: self._provider.delete_key(self._run.service_account, key.key_id, auth),
            deletion_result, key_id=key.key_id,
            detail=f"rotator reconcile --fix by {self._run.actor}: {why}")
