"""The rotation state machine: pure decisions, no IO.

``next_action`` says what the runner must do for a rotation in its current step;
``advance`` folds the outcome of that action into the next persisted state. Both are
total functions of their arguments (no clock reads, no IO), so every transition and
every failure branch is unit-tested by feeding outcomes.

    plan ─► create ─► verify ─► store ─► grace ─► revoke ─► done (completed)
                                           ▲   │ still used (usage-aware grace)
                                           └───┘
     │        │          │        │
     │        └──────────┴────────┴──► rollback ─► done (rolled_back)
     └──► done (failed)         verify/store without the secret ─► create (again)

A provider that rate-limits plan or create past the call's retry budget leaves the
rotation where it is (``Throttled``): the runner parks it for the next run, so a 429 is
waited out across runs and never rolls a rotation back or fails it by itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from rotator.core.model import Failure, FailureCode, KeyRecord, Rotation, Status, Step, reason_text

__all__ = [
    "BEFORE_STORE",
    "MAX_RECREATES",
    "Action",
    "GraceElapsed",
    "GraceHeld",
    "InvalidTransition",
    "KeyCreated",
    "Outcome",
    "Planned",
    "Refused",
    "RevokeDeferred",
    "Revoked",
    "RollbackBlocked",
    "RolledBack",
    "SecretLost",
    "StepFailed",
    "Stored",
    "Throttled",
    "Verified",
    "advance",
    "cancel_refusal",
    "cancelled",
    "deletable_when_full",
    "next_action",
    "vault_holds_new_key",
]

# How often a rotation may lose its new key's secret (crash between create and store)
# and start over before it gives up: a crash loop must not create keys forever.
MAX_RECREATES = 3

# The steps before the store: Vault has not been written, so a rollback deletes the new
# key and leaves what consumers read untouched.
BEFORE_STORE = frozenset({Step.PLAN, Step.CREATE, Step.VERIFY})


class InvalidTransition(ValueError):
    """An outcome that cannot follow the rotation's step: a bug in the runner."""


class Action(StrEnum):
    PLAN = "plan"                        # read Vault, learn the current key id
    CREATE = "create"                    # delete keys left under our name, create one
    VERIFY = "verify"                    # probe the new key until it authenticates
    STORE = "store"                      # CAS-write the verified key to Vault, read back
    RECONCILE_STORE = "reconcile_store"  # resumed in store: did the write land?
    DISCARD = "discard"                  # resumed without the secret: report SecretLost
    WAIT = "wait"                        # grace not over yet
    END_GRACE = "end_grace"
    REVOKE = "revoke"                    # delete the old key
    ROLLBACK = "rollback"                # restore Vault if ours, delete the new key
    NONE = "none"                        # terminal


# Outcomes: what the runner reports back after performing an action.
@dataclass(frozen=True, slots=True)
class Planned:
    old_key_id: str
    old_version: int


@dataclass(frozen=True, slots=True)
class Refused:
    """Nothing was changed and nothing will be: the current key is unusable, say."""

    reason: str
    code: FailureCode = FailureCode.REFUSED


@dataclass(frozen=True, slots=True)
class Throttled:
    """The provider rate-limited past the call's retry budget, before this step changed
    anything a rerun would not redo: stay at the step, to be resumed by the next run."""

    reason: str


@dataclass(frozen=True, slots=True)
class KeyCreated:
    key_id: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Verified:
    pass


@dataclass(frozen=True, slots=True)
class Stored:
    version: int


@dataclass(frozen=True, slots=True)
class SecretLost:
    """The new key's secret is gone (a restart): it must be deleted and made again."""


@dataclass(frozen=True, slots=True)
class StepFailed:
    """A permanent failure, or transient ones past the step's budget: roll back."""

    reason: str
    code: FailureCode = FailureCode.STEP_FAILED


@dataclass(frozen=True, slots=True)
class GraceElapsed:
    pass


@dataclass(frozen=True, slots=True)
class GraceHeld:
    """Usage-aware grace: the old key is still used; look again at ``until``."""

    until: datetime


@dataclass(frozen=True, slots=True)
class Revoked:
    already_gone: bool = False


@dataclass(frozen=True, slots=True)
class RevokeDeferred:
    """The old key could not be deleted in budget; it is queued for cleanup."""

    reason: str


@dataclass(frozen=True, slots=True)
class RolledBack:
    cleanup_pending: bool = False


@dataclass(frozen=True, slots=True)
class RollbackBlocked:
    """Vault's state cannot be learned yet (unreachable); try the rollback again later."""

    reason: str


Outcome = (
    Planned | Refused | Throttled | KeyCreated | Verified | Stored | SecretLost | StepFailed
    | GraceElapsed | GraceHeld | Revoked | RevokeDeferred | RolledBack | RollbackBlocked
)


def next_action(rotation: Rotation, now: datetime, holds_secret: bool) -> Action:
    """What the runner must do next. ``holds_secret``: the new key's secret is in memory."""
    step = rotation.step
    if rotation.is_terminal or step is Step.DONE:
        return Action.NONE
    if step is Step.VERIFY:
        return Action.VERIFY if holds_secret else Action.DISCARD
    if step is Step.STORE:
        return Action.STORE if holds_secret else Action.RECONCILE_STORE
    if step is Step.GRACE:
        assert rotation.grace_ends_at is not None, "grace without a deadline"
        return Action.END_GRACE if now >= rotation.grace_ends_at else Action.WAIT
    return {
        Step.PLAN: Action.PLAN,
        Step.CREATE: Action.CREATE,
        Step.REVOKE: Action.REVOKE,
        Step.ROLLBACK: Action.ROLLBACK,
    }[step]


# One flat table of transitions reads better than helpers split to please a counter.
def advance(rotation: Rotation, outcome: Outcome, now: datetime) -> Rotation:  # noqa: PLR0911, PLR0912
    """Fold ``outcome`` of the current step's action into the next state."""
    step = rotation.step
    match step, outcome:
        case Step.PLAN, Planned(old_key_id=key_id, old_version=version):
            # ``reason=None``: a park's words (``Throttled``) do not outlive the park.
            return rotation.evolve(step=Step.CREATE, old_key_id=key_id, old_version=version,
                                   reason=None)
        case Step.PLAN, Refused(reason=reason, code=code):
            return _fail(rotation, Failure(step, code, reason), now)
        case (Step.PLAN | Step.CREATE), Throttled(reason=reason):
            # Nothing to undo: a rerun of plan reads again, one of create deletes a key a
            # lost answer made under this rotation's name before it creates.
            return rotation.evolve(reason=f"rate limited at {step.value}, parked: {reason}")
        case Step.CREATE, KeyCreated(key_id=key_id, fingerprint=fpr):
            return rotation.evolve(step=Step.VERIFY, new_key_id=key_id, new_fingerprint=fpr,
                                   reason=None)
        case (Step.CREATE | Step.VERIFY | Step.STORE), StepFailed(reason=reason, code=code):
            return _roll_back(rotation, Failure(step, code, reason))
        case Step.VERIFY, Verified():
            return rotation.evolve(step=Step.STORE)
        case (Step.VERIFY | Step.STORE), SecretLost():
            return _start_over(rotation)
        case Step.STORE, Stored(version=version):
            deadline = now + timedelta(seconds=rotation.grace_seconds)
            return rotation.evolve(step=Step.GRACE, new_version=version, grace_ends_at=deadline)
        case Step.GRACE, GraceElapsed():
            assert rotation.grace_ends_at is not None
            if now < rotation.grace_ends_at:
                raise InvalidTransition(f"grace of {rotation.rotation_id} is not over")
            return rotation.evolve(step=Step.REVOKE)
        case Step.GRACE, GraceHeld(until=until):
            return _hold(rotation, until, now)
        case Step.REVOKE, Revoked():
            return _finish(rotation, Status.COMPLETED, now, None)
        case Step.REVOKE, RevokeDeferred(reason=reason):
            return _finish(rotation, Status.COMPLETED, now,
                           f"old key {rotation.old_key_id} queued for cleanup: {reason}")
        case Step.ROLLBACK, RolledBack(cleanup_pending=pending):
            failure = _failure_of(rotation)
            reason = reason_text(failure, rollback_blocked=rotation.rollback_blocked,
                                 cleanup_pending=pending, new_key_id=rotation.new_key_id)
            return _finish(rotation.evolve(failure=failure), Status.ROLLED_BACK, now, reason)
        case Step.ROLLBACK, RollbackBlocked(reason=why):
            failure = _failure_of(rotation)
            return rotation.evolve(failure=failure, rollback_blocked=why,
                                   reason=reason_text(failure, rollback_blocked=why))
    raise InvalidTransition(
        f"{type(outcome).__name__} cannot follow step {step.value} "
        f"of rotation {rotation.rotation_id}"
    )


def cancel_refusal(rotation: Rotation) -> str | None:
    """Why ``rotator cancel`` must not roll ``rotation`` back now; ``None`` when its step
    allows it (the caller still checks that Vault does not hold the new key).

    From grace on, the new key is in Vault and consumers may already have switched to it:
    a rollback would delete a key in use, so the rotation is let finish instead.
    """
    if rotation.is_terminal:
        return f"it has already ended ({rotation.status.value})"
    if rotation.step in (Step.GRACE, Step.REVOKE):
        return (f"its new key {rotation.new_key_id} is in Vault (version "
                f"{rotation.new_version}) and consumers may already use it; rolling back "
                "now would delete a key in use: let it finish (`rotator rotate "
                f"{rotation.target}` joins it and sees it to its end), then rotate again if "
                "the new key is unwanted")
    if rotation.step is Step.ROLLBACK:
        why = f" (blocked: {rotation.rollback_blocked})" if rotation.rollback_blocked else ""
        return (f"it is rolling back already{why}; the next run retries it (`rotator rotate "
                f"{rotation.target}` does so now)")
    return None


def cancelled(rotation: Rotation, actor: str, reason: str) -> Rotation:
    """``rotation`` sent to its rollback by an operator: who and why become its failure."""
    return _roll_back(rotation, Failure(rotation.step, FailureCode.CANCELLED,
                                        f"cancelled by {actor}: {reason}"))


def _hold(rotation: Rotation, until: datetime, now: datetime) -> Rotation:
    """Move the end of the grace window to ``until``, stored like the first deadline.

    The window's length grows by as much, so its start (``grace_started_at``: when the new
    key was stored, from which ``max_grace`` counts) stays where it was, and every reader
    of ``grace_ends_at`` (the daemon's timer, ``verify``'s early-revoke check) follows.
    """
    assert rotation.grace_ends_at is not None
    if until <= now or until <= rotation.grace_ends_at:
        raise InvalidTransition(f"a hold of {rotation.rotation_id} must end later than now "
                                "and its current deadline")
    extra = (until - rotation.grace_ends_at).total_seconds()
    return rotation.evolve(grace_ends_at=until, grace_seconds=rotation.grace_seconds + extra)


def _start_over(rotation: Rotation) -> Rotation:
    count = rotation.recreate_count + 1
    if count > MAX_RECREATES:
        return _roll_back(rotation.evolve(recreate_count=count), Failure(
            rotation.step, FailureCode.SECRET_LOST_TOO_OFTEN,
            f"lost the new key's secret {count} times (restarts); giving up"))
    return rotation.evolve(step=Step.CREATE, recreate_count=count,
                           new_key_id=None, new_fingerprint=None)


def _roll_back(rotation: Rotation, failure: Failure) -> Rotation:
    return rotation.evolve(step=Step.ROLLBACK, failure=failure, reason=reason_text(failure))


def _fail(rotation: Rotation, failure: Failure, now: datetime) -> Rotation:
    return _finish(rotation.evolve(failure=failure), Status.FAILED, now, reason_text(failure))


def _failure_of(rotation: Rotation) -> Failure:
    """The rotation's failure; a row from before the fields were stored has its text only."""
    if rotation.failure is not None:
        return rotation.failure
    return Failure.unrecorded(rotation.reason or "rolled back")


def _finish(rotation: Rotation, status: Status, now: datetime, reason: str | None) -> Rotation:
    return rotation.evolve(step=Step.DONE, status=status, finished_at=now, reason=reason)


def deletable_when_full(keys: Sequence[KeyRecord], protected: Iterable[str],
                        own_name: str) -> list[KeyRecord]:
    """Keys that may go when the account is at its key limit, oldest first.

    Never the current key or one another rotation relies on (``protected``), and never
    our own name: keys under our name are already deleted before any create.
    """
    keep = set(protected)
    candidates = [k for k in keys if k.key_id not in keep and k.name != own_name]
    far_past = datetime.min
    return sorted(
        candidates,
        key=lambda k: (k.created_at.replace(tzinfo=None) if k.created_at else far_past),
    )


def vault_holds_new_key(rotation: Rotation, current_version: int,
                        current_fingerprint: str, written_by: str | None = None) -> bool:
    """Whether Vault's current version is (or may be) the key this rotation wrote.

    ``written_by`` is the rotation id in the secret's custom metadata: a read that does
    not match the fingerprint but names us is treated as ours, so a rollback restores
    rather than deletes a key Vault may be serving.
    """
    if rotation.old_version is not None and current_version <= rotation.old_version:
        return False
    return (
        (rotation.new_fingerprint is not None and current_fingerprint == rotation.new_fingerprint)
        or written_by == rotation.rotation_id
    )
