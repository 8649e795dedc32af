"""Recording a rotation's side effects: an intent row before, an outcome row after.

``AuditTrail.side_effect`` is the only way the runner touches the provider or Vault
with a change, so the pairing of intent and outcome cannot be forgotten. Rows carry key
ids, fingerprints, Vault versions and provider request ids; never a secret.

A trail belongs to one holding of a target's lease: every row is written under that
``Lease`` (the database refuses it once another holder took over), and every side effect
is preceded by ``confirm``, which renews the lease or raises ``LeaseLost``, so a process
that was frozen past its lease never makes a call after waking.

What a step found (``note_with_step``: the key Vault held, a probe's answer) is written
with the state the step saves, in its transaction, or with the next intent if a side
effect comes first: a note never stands in the audit for a step whose state was not
saved, and a rotation costs a transaction a step rather than one per row.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from rotator.core.errors import RotatorError
from rotator.core.model import AuditEvent, Rotation
from rotator.core.ports import Clock, Lease, RotationRepository
from rotator.core.vocabulary import AuditAction, AuditResult, EventKind
from rotator.engine.crashpoints import Moment, crash_point, effect_point

__all__ = ["AuditTrail", "EffectResult"]

T = TypeVar("T")


class EffectResult:
    """What a side effect reports for its outcome row."""

    __slots__ = ("detail", "key_id", "request_id", "result", "vault_version")

    def __init__(self, *, result: AuditResult = AuditResult.OK, key_id: str | None = None,
                 request_id: str | None = None, vault_version: int | None = None,
                 detail: str | None = None) -> None:
        self.result = result
        self.key_id = key_id
        self.request_id = request_id
        self.vault_version = vault_version
        self.detail = detail


class AuditTrail:
    def __init__(self, repo: RotationRepository, clock: Clock, lease: Lease,
                 confirm: Callable[[], None]) -> None:
        self._repo = repo
        self._clock = clock
        self.lease = lease
        # Renews the lease if it is still ours, else raises ``LeaseLost``.
        self._confirm = confirm
        self._with_step: list[AuditEvent] = []   # see ``note_with_step``

    def _record(self, event: AuditEvent) -> None:
        self._repo.record_all([*self.take_step_notes(), event], self.lease)

    def _note(self, rotation: Rotation, action: AuditAction, result: AuditResult | None,
              key_id: str | None, fingerprint: str | None, vault_version: int | None,
              request_id: str | None, detail: str | None) -> AuditEvent:
        return AuditEvent(
            rotation_id=rotation.rotation_id, target=rotation.target, step=rotation.step.value,
            kind=EventKind.NOTE, action=action, result=result, key_id=key_id,
            fingerprint=fingerprint, vault_version=vault_version, request_id=request_id,
            detail=detail, at=self._clock.now(),
        )

    def note(self, rotation: Rotation, action: AuditAction, *,
             result: AuditResult | None = AuditResult.OK,
             key_id: str | None = None, fingerprint: str | None = None,
             vault_version: int | None = None, request_id: str | None = None,
             detail: str | None = None) -> None:
        """Append a note now (with any notes the step holds, before it)."""
        self._record(self._note(rotation, action, result, key_id, fingerprint,
                                vault_version, request_id, detail))

    def note_with_step(self, rotation: Rotation, action: AuditAction, *,
                       result: AuditResult | None = AuditResult.OK,
                       key_id: str | None = None, fingerprint: str | None = None,
                       vault_version: int | None = None, request_id: str | None = None,
                       detail: str | None = None) -> None:
        """A note of what the step in progress found: held until the step's state is
        saved (``take_step_notes``) or the next row is written, whichever comes first.

        A crash before then loses it with the step, which is then done again."""
        self._with_step.append(self._note(rotation, action, result, key_id, fingerprint,
                                          vault_version, request_id, detail))

    def take_step_notes(self) -> list[AuditEvent]:
        """The notes held for the step's save (and no longer held here)."""
        taken, self._with_step = self._with_step, []
        return taken

    def write_step_notes(self) -> None:
        """Write the notes held, if any, now: the step ends without a save."""
        if self._with_step:
            self._repo.record_all(self.take_step_notes(), self.lease)

    def ending(self, rotation: Rotation, *, old_key_pending: bool = False) -> AuditEvent:
        """The note that ends a finished rotation, spelt as its status in both columns;
        ``old_key_pending``: the old key's deletion was queued, so the result says
        ``completed_pending_cleanup`` (the status, and the action, stay ``completed``).

        Not recorded here: it is saved with the rotation's final state, in one transaction.
        """
        result = AuditResult(rotation.status.value)
        if old_key_pending and result is AuditResult.COMPLETED:
            result = AuditResult.COMPLETED_PENDING_CLEANUP
        return AuditEvent(
            rotation_id=rotation.rotation_id, target=rotation.target, step=rotation.step.value,
            kind=EventKind.NOTE, action=AuditAction(rotation.status.value),
            result=result, key_id=rotation.new_key_id,
            vault_version=rotation.new_version, detail=rotation.reason, at=self._clock.now())

    def side_effect(self, rotation: Rotation, action: AuditAction, fn: Callable[[], T],
                    describe: Callable[[T], EffectResult], *, key_id: str | None = None,
                    fingerprint: str | None = None, vault_version: int | None = None,
                    detail: str | None = None) -> T:
        """Record the intent, confirm the lease, run ``fn``, record its outcome, return its value.

        The lease is confirmed after the intent row, right before the call: a process
        frozen between the two wakes up, finds the lease gone and makes no call.
        """
        op_id = uuid.uuid4().hex
        base = AuditEvent(rotation_id=rotation.rotation_id, target=rotation.target,
                          step=rotation.step.value, kind=EventKind.INTENT, action=action,
                          op_id=op_id, key_id=key_id, fingerprint=fingerprint,
                          vault_version=vault_version)
        self._record(replace(base, detail=detail, at=self._clock.now()))
        crash_point(effect_point(action, Moment.BEFORE))
        self._confirm()
        try:
            value = fn()
        except RotatorError as exc:
            self._record(replace(
                base, kind=EventKind.OUTCOME, result=AuditResult.ERROR,
                request_id=exc.context.get("request_id"),
                detail=f"{type(exc).__name__}: {exc}", at=self._clock.now()))
            raise
        outcome = describe(value)
        self._record(replace(
            base, kind=EventKind.OUTCOME, result=outcome.result,
            key_id=outcome.key_id or key_id,
            vault_version=outcome.vault_version or vault_version,
            request_id=outcome.request_id, detail=outcome.detail, at=self._clock.now()))
        crash_point(effect_point(action, Moment.AFTER))
        return value

    def close_open_intents(self, rotation: Rotation) -> int:
        """After a crash: give every dangling intent an ``unknown`` outcome row."""
        dangling = self._repo.open_intents(rotation.rotation_id)
        for intent in dangling:
            self._record(AuditEvent(
                rotation_id=intent.rotation_id, target=intent.target, step=intent.step,
                kind=EventKind.OUTCOME, action=intent.action, result=AuditResult.UNKNOWN,
                key_id=intent.key_id, fingerprint=intent.fingerprint, op_id=intent.op_id,
                detail="the process stopped before recording the outcome; "
                       "the step reconciles from the provider and Vault",
                at=self._clock.now(),
            ))
        return len(dangling)
