"""Drives one target's rotation to its end: lease, cleanup queue, resume, step loop.

The loop asks the pure machine for the next action, performs it through ``steps`` or
``unwind``, folds the outcome in with ``advance`` and saves the new state before the
next action. A process killed anywhere resumes from the saved state on the next run.

Everything is done under one holding of the target's lease (a ``Lease``, whose generation
is the fencing token): every state write carries it and is refused by the database once
another holder took over, and every side effect is preceded by a confirmation of it. A
process that lost its lease (frozen, partitioned, slow) gets ``LeaseLost`` at its next
write or call and stops working on the target, having changed nothing. A take-over that
finds a side effect of the holder before it still undecided waits until that holder's
call must have ended (its lease's expiry plus ``call_deadline``) before it looks.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from rotator.core import machine as m
from rotator.core.errors import LeaseHeld, LeaseLost, RotatorError, SecretNotFound
from rotator.core.manual_reason import check_manual_reason
from rotator.core.model import Rotation, Status
from rotator.core.ports import (
    Clock,
    KeyProvider,
    Lease,
    RotationRepository,
    RunObserver,
    SecretStore,
)
from rotator.core.secret import Secret
from rotator.core.started_note import started_detail
from rotator.core.target import TargetSpec
from rotator.core.vocabulary import AuditAction, AuditResult, Trigger, VaultMetadataKey
from rotator.engine.audit_trail import AuditTrail
from rotator.engine.crashpoints import STARTED, crash_point, step_point
from rotator.engine.grace import GraceKeeper
from rotator.engine.management import ManagementKeys
from rotator.engine.steps import StepRunner
from rotator.engine.unwind import Unwinder

__all__ = ["CancelReport", "RotationReport", "Runner", "new_rotation_id"]

log = structlog.get_logger("rotator.runner")

# A blocked rollback (Vault or the provider unreachable) is retried this often in the
# foreground before the run gives up and leaves it for the next run.
_ROLLBACK_TRIES = 3


def new_rotation_id(now: datetime) -> str:
    return f"rot_{now:%Y%m%dT%H%M%S}_{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class RotationReport:
    rotation: Rotation
    resumed: bool
    cleaned: int = 0
    cleanup_pending: int = 0


@dataclass(frozen=True, slots=True)
class CancelReport:
    """What ``Runner.cancel`` did: ``refused`` says why it changed nothing (``rotation``
    None: nothing was in flight); else ``rotation`` is the state its rollback reached."""

    rotation: Rotation | None
    refused: str | None = None


@dataclass(slots=True)
class _Held:
    """One holding of a target's lease, and the rotation it works on (once known)."""

    lease: Lease
    rot: Rotation | None = None


class _Unobserved:
    def rotation_started(self, rotation: Rotation) -> None:
        pass

    def step_done(self, rotation: Rotation, action: str, seconds: float) -> None:
        pass

    def rotation_finished(self, rotation: Rotation, last_step: str) -> None:
        pass


def _never() -> bool:
    return False


class Runner:
    def __init__(self, *, providers: Mapping[str, KeyProvider], store: SecretStore,
                 repo: RotationRepository, clock: Clock, holder: str,
                 lease_ttl: float = 300.0, call_deadline: float = 0.0,
                 rollback_retry_delay: float = 5.0,
                 heartbeat: Callable[[], None] | None = None,
                 observer: RunObserver | None = None,
                 stopping: Callable[[], bool] = _never) -> None:
        self._providers = providers
        self._store = store
        self._repo = repo
        self._clock = clock
        self._holder = holder
        self._lease_ttl = lease_ttl
        # The longest a provider or Vault call may take, retries included: how long a
        # call of a holder that stopped renewing may still be in flight.
        self._call_deadline = call_deadline
        self._rollback_retry_delay = rollback_retry_delay
        # Called while waiting out a grace window: keeps the Vault token renewed.
        self._heartbeat = heartbeat
        self._observer = observer or _Unobserved()
        # Asked between steps: a shutting-down daemon parks the rotation at a step boundary.
        self._stopping = stopping
        self._fresh: dict[str, Secret] = {}
        self._keys = ManagementKeys(store, clock)   # management keys read from Vault
        self._driven: set[str] = set()   # rotations this process has run: not "resumed"

    def rotate(self, spec: TargetSpec, *, trigger: str = Trigger.MANUAL, actor: str = "cli",
               grace: float | None = None, wait: bool = True,
               lease_wait: float = 0.0, reason: str | None = None) -> RotationReport:
        """Finish the target's in-flight rotation if it has one, else run a new one.

        ``lease_wait``: how long to wait for another holder's lease (a crashed process's
        lease lapses after ``lease_ttl``) before giving up with ``LeaseHeld``. ``reason``:
        why an operator asked (``check_manual_reason``), kept with a rotation it starts.
        """
        report = self.rotate_if(spec, None, trigger=trigger, actor=actor, grace=grace,
                                wait=wait, lease_wait=lease_wait, reason=reason)
        assert report is not None  # without a condition it always runs
        return report

    def rotate_if(self, spec: TargetSpec, start_if: Callable[[], bool] | None, *,
                  trigger: str, actor: str, grace: float | None = None, wait: bool = True,
                  lease_wait: float = 0.0, reason: str | None = None) -> RotationReport | None:
        """``rotate``, but a new rotation starts only if ``start_if()`` still says so.

        ``start_if`` is asked while the lease is held, so a decision made from an earlier
        read (the daemon's "this target is due") cannot start a second rotation after
        another replica has just finished one. ``None``: nothing was started or resumed.
        """
        with self._holding(spec, lease_wait) as held:
            trail, steps, unwind = self._workers(spec, held.lease)
            cleaned, pending = unwind.cleanup(spec)
            rot = held.rot = self._repo.running_rotation(spec.name)
            resumed = rot is not None and rot.rotation_id not in self._driven
            if rot is None:
                if start_if is not None and not start_if():
                    return None
                rot = held.rot = self._start(spec, trail, trigger, actor, grace, reason)
            else:
                self._refuse_other_start(rot, spec)
                # Nothing of this rotation runs now (we hold the lease), so an intent with
                # no outcome was cut short: by a crash, or by an error in this very process
                # (the database went away between a side effect and its outcome row).
                closed = trail.close_open_intents(rot)
                if resumed or closed:
                    log.warning("rotation_resumed", rotation_id=rot.rotation_id,
                                step=rot.step.value, open_intents=closed)
            self._driven.add(rot.rotation_id)
            rot = self._drive(rot, spec, trail, steps, unwind, wait)
            return RotationReport(rot, resumed, cleaned, pending)

    def cancel(self, spec: TargetSpec, *, actor: str, reason: str) -> CancelReport:
        """Roll the target's in-flight rotation back, if that is safe now.

        Under the lease (``LeaseHeld`` at once if a live process holds it: it may be in
        the middle of a step), so nothing else moves the rotation meanwhile. Refused,
        changing nothing but a note, from grace on (``machine.cancel_refusal``) and
        whenever Vault holds, or may hold, the new key: the rollback would otherwise
        restore the old version under consumers that read the new one.
        """
        with self._holding(spec, 0.0) as held:
            trail, steps, unwind = self._workers(spec, held.lease)
            rot = held.rot = self._repo.running_rotation(spec.name)
            if rot is None:
                return CancelReport(None, "no rotation of this target is in flight")
            self._refuse_other_start(rot, spec)
            trail.close_open_intents(rot)
            asked = f"cancel asked by {actor}: {reason}"
            refused = m.cancel_refusal(rot) or self._vault_refusal(rot, spec)
            if refused is not None:
                trail.note(rot, AuditAction.CANCEL, result=AuditResult.REFUSED,
                           key_id=rot.new_key_id, detail=f"{asked}; refused: {refused}")
                log.warning("cancel_refused", rotation_id=rot.rotation_id, reason=refused)
                return CancelReport(rot, refused)
            trail.note(rot, AuditAction.CANCEL, key_id=rot.new_key_id,
                       detail=f"{asked}; rolling back from step {rot.step.value}")
            rot = m.cancelled(rot, actor, reason)
            self._repo.save_rotation(rot, held.lease)
            self._fresh.pop(rot.rotation_id, None)
            self._driven.add(rot.rotation_id)
            return CancelReport(self._drive(rot, spec, trail, steps, unwind, wait=True))

    @staticmethod
    def _refuse_other_start(rot: Rotation, spec: TargetSpec) -> None:
        """A rotation is driven only with the provider and Vault ref it started with: its
        next write could otherwise put a key (or restore one) at another path, or delete
        a key with another provider's credentials. Refused before any side effect."""
        why = spec.not_started_with(rot)
        if why is not None:
            log.error("rotation_started_elsewhere", rotation_id=rot.rotation_id, reason=why)
            raise RotatorError(f"{why}: not driving it with the current config; put the "
                               "target back as it was, or cancel it from a config that is",
                               target=rot.target, rotation_id=rot.rotation_id)

    def _vault_refusal(self, rot: Rotation, spec: TargetSpec) -> str | None:
        """Why Vault forbids the rollback: it holds the new key, or cannot say."""
        try:
            current = self._store.read_current(spec.ref)
        except SecretNotFound:
            return None
        except RotatorError as exc:
            return (f"cannot read Vault to tell whether it serves the new key: {exc}; fix "
                    "the access and cancel again")
        if m.vault_holds_new_key(rot, current.version, current.secret.fingerprint,
                                 current.custom_metadata.get(VaultMetadataKey.ROTATION_ID)):
            return (f"Vault already holds its new key {rot.new_key_id} (version "
                    f"{current.version}) and consumers may have read it; let it finish "
                    f"(`rotator rotate {rot.target}` joins it and sees it to its end)")
        return None

    def cleanup(self, spec: TargetSpec) -> tuple[int, int] | None:
        """Retry the target's queued key deletions; ``None`` if another process holds it."""
        try:
            with self._holding(spec, 0.0) as held:
                return self._workers(spec, held.lease)[2].cleanup(spec)
        except LeaseHeld:
            return None

    @contextmanager
    def _holding(self, spec: TargetSpec, lease_wait: float) -> Iterator[_Held]:
        """The target's lease, taken (``LeaseHeld`` if another holder keeps it past
        ``lease_wait``), settled after a take-over, and released however the work ends;
        on ``LeaseLost`` the work stops, forgetting what only this holding knew."""
        held = _Held(self._acquire(spec, lease_wait))
        structlog.contextvars.bind_contextvars(target=spec.name)
        try:
            self._settle(held.lease)
            yield held
        except LeaseLost:
            self._lost(held.lease, held.rot)
            raise
        finally:
            self._repo.release_lease(spec.name, self._holder)
            structlog.contextvars.unbind_contextvars("target", "rotation_id")

    def _acquire(self, spec: TargetSpec, lease_wait: float) -> Lease:
        deadline = self._clock.now().timestamp() + lease_wait
        said = False
        while (lease := self._repo.acquire_lease(spec.name, self._holder, self._lease_ttl,
                                                 self._clock.now())) is None:
            if not said and lease_wait > 0:
                said = True
                log.info("lease_waiting", target=spec.name, seconds=lease_wait)
            if self._clock.now().timestamp() >= deadline:
                raise LeaseHeld(
                    "another process holds this target's lease; if it died, the lease "
                    f"lapses within {self._lease_ttl:g}s (retry, or pass --wait-lease)",
                    target=spec.name)
            self._clock.sleep(min(0.5, self._lease_ttl / 4))
        return lease

    def _settle(self, lease: Lease) -> None:
        """After a take-over, wait until a call the holder before us made must have ended.

        Only if that holder did not release its lease and left a side effect undecided
        (an intent with no outcome): its call may still be in flight, and reading the
        provider or Vault now could miss what it is about to do.
        """
        if lease.previous_expiry is None or not self._repo.has_open_intent(lease.target):
            return
        until = lease.previous_expiry.timestamp() + self._call_deadline
        if self._clock.now().timestamp() < until:
            log.warning("takeover_waiting", reason="the previous holder left a side effect "
                        "undecided; waiting until its call must have ended",
                        seconds=round(until - self._clock.now().timestamp(), 3))
        while (left := until - self._clock.now().timestamp()) > 0:
            self._clock.sleep(self._slice(left))
            self._confirm(lease)

    def _slice(self, left: float) -> float:
        """How much of a wait of ``left`` seconds to sleep before renewing the lease.

        A third of its ttl, well inside it; never under 50 ms, so a tiny ttl does not turn
        the wait into busy polling.
        """
        return min(left, max(self._lease_ttl / 3, 0.05))

    def _confirm(self, lease: Lease) -> None:
        """Renew the lease if it is still ours; ``LeaseLost`` if another holder took it."""
        if not self._repo.confirm_lease(lease, self._lease_ttl, self._clock.now()):
            raise LeaseLost("lost the lease mid-rotation; another process took over",
                            target=lease.target, generation=lease.generation)

    def _lost(self, lease: Lease, rot: Rotation | None) -> None:
        """Stop working on the target: forget what only this holding knew."""
        if rot is not None:
            self._fresh.pop(rot.rotation_id, None)
        log.warning("lease_lost", generation=lease.generation,
                    rotation_id=None if rot is None else rot.rotation_id,
                    detail="another process took this target over; stopped, nothing written")

    def _workers(self, spec: TargetSpec,
                 lease: Lease) -> tuple[AuditTrail, StepRunner, Unwinder]:
        provider = self._providers[spec.provider]
        trail = AuditTrail(self._repo, self._clock, lease, lambda: self._confirm(lease))
        args = (provider, self._store, self._repo, self._clock, trail, self._fresh, self._keys)
        return trail, StepRunner(*args), Unwinder(*args)

    def _start(self, spec: TargetSpec, trail: AuditTrail, trigger: str, actor: str,
               grace: float | None, reason: str | None) -> Rotation:
        now = self._clock.now()
        rot = Rotation(
            rotation_id=new_rotation_id(now), target=spec.name,
            service_account=spec.service_account, trigger=trigger, actor=actor,
            grace_seconds=spec.grace_seconds if grace is None else grace, started_at=now,
            manual_reason=None if reason is None else check_manual_reason(reason),
            # An operator's --grace is the window, exactly: no hold past it.
            usage_grace=spec.usage_grace if grace is None else None,
            # What it is finished with, whatever the config becomes (``app.orphans``).
            provider=spec.provider, vault_ref=spec.ref)
        self._repo.insert_rotation(rot, trail.lease)
        # Who asked and why, in the append-only, chained trail too: the rotations row is
        # the owner's to edit (``started_note``).
        usage = rot.usage_grace
        trail.note(rot, AuditAction.STARTED, detail=started_detail(
            trigger, actor, rot.grace_seconds, rot.manual_reason,
            None if usage is None else (usage.quiet_period, usage.max_grace)))
        log.info("rotation_started", rotation_id=rot.rotation_id, trigger=trigger)
        self._observer.rotation_started(rot)
        crash_point(STARTED)
        return rot

    def _drive(self, rot: Rotation, spec: TargetSpec, trail: AuditTrail, steps: StepRunner,
               unwind: Unwinder, wait: bool) -> Rotation:
        structlog.contextvars.bind_contextvars(rotation_id=rot.rotation_id)
        blocked = 0
        while not rot.is_terminal:
            action = m.next_action(rot, self._clock.now(), rot.rotation_id in self._fresh)
            if action is m.Action.WAIT:
                if not wait:
                    return rot
                self._wait_for_grace(rot, trail.lease)
                continue
            # Never park while a new key's secret exists only in this process's memory
            # (create to store): a restart would have to delete that key and make another.
            if self._stopping() and rot.rotation_id not in self._fresh:
                log.info("rotation_parked", step=rot.step.value)
                return rot
            started = time.monotonic()
            outcome = self._perform(action, rot, spec, trail, steps, unwind)
            self._observer.step_done(rot, action.value, time.monotonic() - started)
            new = m.advance(rot, outcome, self._clock.now())
            # A finished rotation's state and its ending note land together or not at all.
            ending = (trail.ending(new, old_key_pending=isinstance(outcome, m.RevokeDeferred))
                      if new.is_terminal else None)
            # The step's notes and the lease's renewal go with its state: one transaction.
            self._repo.save_rotation(
                new, trail.lease, ending, notes=trail.take_step_notes(),
                renew_until=self._clock.now() + timedelta(seconds=self._lease_ttl))
            log.info("rotation_step", step=rot.step.value, next=new.step.value,
                     outcome=type(outcome).__name__)
            crash_point(step_point(new.step))
            if isinstance(outcome, m.Throttled):
                # Parked, lease let go: the daemon's next sweep (or the next `rotate`, or
                # `run --once`) resumes it once the provider's window has passed.
                log.warning("rotation_rate_limited", step=rot.step.value, reason=outcome.reason)
                return new
            if isinstance(outcome, m.RollbackBlocked):
                blocked += 1
                log.error("rollback_blocked", reason=outcome.reason, attempt=blocked)
                if blocked >= _ROLLBACK_TRIES or self._stopping():
                    return new
                self._clock.sleep(self._rollback_retry_delay * blocked)
                self._confirm(trail.lease)
            if new.is_terminal:
                self._finished(new, rot.step.value)
            rot = new
        return rot

    def _perform(self, action: m.Action, rot: Rotation, spec: TargetSpec, trail: AuditTrail,
                 steps: StepRunner, unwind: Unwinder) -> m.Outcome:
        if action is m.Action.END_GRACE:
            return GraceKeeper(self._providers[spec.provider], self._store, self._repo,
                               self._clock, trail, self._fresh, self._keys).end_grace(rot, spec)
        handlers = {
            m.Action.PLAN: steps.plan, m.Action.CREATE: steps.create,
            m.Action.VERIFY: steps.verify, m.Action.DISCARD: steps.discard,
            m.Action.STORE: steps.store, m.Action.RECONCILE_STORE: steps.reconcile_store,
            m.Action.REVOKE: unwind.revoke, m.Action.ROLLBACK: unwind.rollback,
        }
        return handlers[action](rot, spec)

    def _wait_for_grace(self, rot: Rotation, lease: Lease) -> None:
        assert rot.grace_ends_at is not None
        log.info("grace_waiting", until=rot.grace_ends_at.isoformat())
        while (left := (rot.grace_ends_at - self._clock.now()).total_seconds()) > 0:
            # Sleep in slices so the lease stays ours for as long as the grace lasts.
            self._clock.sleep(self._slice(left))
            self._confirm(lease)
            if self._heartbeat is not None:
                self._heartbeat()

    def _finished(self, rot: Rotation, last_step: str) -> None:
        # No secret to forget here: every way to an end passes the store (which drops the
        # new key's secret once Vault has it) or the rollback (which drops it with the key).
        self._observer.rotation_finished(rot, last_step)
        if rot.status is Status.COMPLETED:
            log.info("rotation_completed", new_key_id=rot.new_key_id,
                     revoked_key_id=rot.old_key_id, note=rot.reason)
        else:
            log.error("rotation_failed", status=rot.status.value, reason=rot.reason)
