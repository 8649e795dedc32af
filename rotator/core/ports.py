"""The ports: the small Protocols the rotation, the daemon and the reports need from outside.

Adapters (``rotator.adapters``) satisfy them structurally; test fakes do too, without
inheriting anything. Values crossing a port are frozen dataclasses; key material is
always a ``Secret``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from rotator.core.model import (
    AuditEvent,
    KeyRecord,
    Rotation,
    ScheduleFacts,
    SecretRef,
    Status,
    StoredEvent,
)
from rotator.core.secret import Secret

__all__ = [
    "Clock",
    "Deletion",
    "Identity",
    "KeyListing",
    "KeyProvider",
    "Lease",
    "NewKey",
    "PendingCleanup",
    "RotationReader",
    "RotationRepository",
    "RunObserver",
    "SecretRef",
    "SecretStore",
    "VaultSecret",
]


class Clock(Protocol):
    """Time, injectable so tests can run a 30-day schedule in a millisecond."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    def sleep(self, seconds: float) -> None: ...


# --- the key provider (Count) ---------------------------------------------------------

@dataclass(frozen=True, slots=True)
class NewKey:
    key_id: str
    name: str
    secret: Secret
    created_at: datetime | None
    request_id: str | None
    # True only if the provider answered the one and only request of this create: no
    # earlier attempt can have made a key whose answer was lost. Unknown is False.
    first_attempt: bool = False


@dataclass(frozen=True, slots=True)
class Identity:
    service_account_id: str
    key_id: str
    request_id: str | None


@dataclass(frozen=True, slots=True)
class KeyListing:
    keys: Sequence[KeyRecord]
    request_id: str | None


@dataclass(frozen=True, slots=True)
class Deletion:
    key_id: str
    already_gone: bool       # the provider answered 404: deleted before, which is success
    request_id: str | None


class KeyProvider(Protocol):
    """A SaaS that issues API keys to service accounts.

    ``auth`` is the bearer for key management: the admin management key, or (in
    ``self`` mode) the account's current key. Transient failures are retried inside
    the adapter by its retry policy; what escapes is a ``RotatorError``.
    """

    def list_keys(self, account: str, auth: Secret) -> KeyListing: ...

    def create_key(self, account: str, name: str, auth: Secret) -> NewKey: ...

    def delete_key(self, account: str, key_id: str, auth: Secret) -> Deletion: ...

    def whoami(self, key: Secret) -> Identity:
        """Probe: raises ``Unauthorized`` if ``key`` does not authenticate (yet)."""
        ...


# --- the secret store (Vault KV v2) -----------------------------------------------------

@dataclass(frozen=True, slots=True)
class VaultSecret:
    version: int
    secret: Secret
    custom_metadata: Mapping[str, str] = field(default_factory=dict)


class SecretStore(Protocol):
    def read_current(self, ref: SecretRef) -> VaultSecret:
        """The current version; ``SecretNotFound`` if none."""
        ...

    def read_version(self, ref: SecretRef, version: int) -> VaultSecret: ...

    def write(self, ref: SecretRef, secret: Secret, cas: int,
              custom_metadata: Mapping[str, str]) -> int:
        """Check-and-set write of ``field`` (other fields of the secret are kept).

        Returns the new version; ``CasConflict`` if the current version is not ``cas``.
        Custom metadata is set on the secret after the data write.
        """
        ...


# --- what the runner reports, to the daemon's metrics ------------------------------------

class RunObserver(Protocol):
    """What the daemon's metrics hear from the runner; every call is synchronous."""

    def rotation_started(self, rotation: Rotation) -> None: ...

    def step_done(self, rotation: Rotation, action: str, seconds: float) -> None: ...

    def rotation_finished(self, rotation: Rotation, last_step: str) -> None: ...


# --- the state and audit store (SQL) -----------------------------------------------------

@dataclass(frozen=True, slots=True)
class PendingCleanup:
    target: str
    service_account: str
    key_id: str
    rotation_id: str
    reason: str
    # The provider whose management key deletes it (revision 0009); None on older rows.
    provider: str | None = None


@dataclass(frozen=True, slots=True)
class Lease:
    """A target's lease as one holder took it: the fencing token of that holder's writes.

    ``generation`` grows by one on every acquisition, so a write carrying an older one
    comes from a holder that has since been taken over and is refused by the database.
    ``previous_expiry``: when the lease of the holder before us lapsed (``None`` if it was
    released, ours, or never taken); a call that holder started may still be in flight
    until that instant plus its call deadline.
    """

    target: str
    holder: str
    generation: int
    previous_expiry: datetime | None = None


class RotationRepository(Protocol):
    """The state writes and the reads the engine needs.

    Every write of a rotation's state takes the ``Lease`` it is made under and raises
    ``LeaseLost``, having changed nothing, once that lease is no longer the target's.
    """

    def insert_rotation(self, rotation: Rotation, lease: Lease) -> None:
        """Raises ``LeaseHeld`` if the target already has a running rotation."""
        ...

    def save_rotation(self, rotation: Rotation, lease: Lease,
                      ending: AuditEvent | None = None, *,
                      notes: Sequence[AuditEvent] = (),
                      renew_until: datetime | None = None) -> None:
        """``RotationFinished`` if the stored rotation has already ended: it never changes.

        In the same transaction as the state: ``notes`` (what the step found) appended,
        then ``ending``, the note that ends the rotation, so a finished rotation has its
        ending note exactly once; and, if given, the lease's expiry pushed to
        ``renew_until`` (the write has just proved the lease ours).
        """
        ...

    def get_rotation(self, rotation_id: str) -> Rotation | None: ...

    def running_rotation(self, target: str) -> Rotation | None: ...

    def record(self, event: AuditEvent, lease: Lease) -> None:
        """Append one audit row (append-only), stamped with the lease's generation."""
        ...

    def record_all(self, events: Sequence[AuditEvent], lease: Lease) -> None:
        """Append ``events`` in order, in one transaction: all of them or none."""
        ...

    def open_intents(self, rotation_id: str) -> list[AuditEvent]:
        """Intents with no outcome row: side effects a crash left undecided."""
        ...

    def has_open_intent(self, target: str) -> bool:
        """Whether any rotation of ``target`` has an intent with no outcome row."""
        ...

    def protected_key_ids(self, service_account: str, except_rotation: str) -> set[str]:
        """Key ids other running rotations of this account rely on."""
        ...

    def acquire_lease(self, target: str, holder: str, ttl_seconds: float,
                      now: datetime) -> Lease | None:
        """Take the lease if it is free, released, lapsed or ours, as a new generation."""
        ...

    def renew_lease(self, target: str, holder: str, ttl_seconds: float,
                    now: datetime) -> bool:
        """Extend ``holder``'s lease, whatever its generation (the daemon's heartbeat)."""
        ...

    def confirm_lease(self, lease: Lease, ttl_seconds: float, now: datetime) -> bool:
        """Extend the lease only if ``lease`` is still the target's current generation."""
        ...

    def release_lease(self, target: str, holder: str) -> None: ...

    def add_cleanup(self, item: PendingCleanup, now: datetime, lease: Lease) -> None: ...

    def pending_cleanups(self, target: str) -> list[PendingCleanup]: ...

    def resolve_cleanup(self, target: str, key_id: str, now: datetime,
                        lease: Lease) -> None: ...


class RotationReader(Protocol):
    """What the daemon's sweep and planner, ``status``, ``audit`` and ``verify`` read.

    Reads only, each a consistent answer of its own; the ``RotationRepository`` writes.
    """

    def events(self, target: str | None = None, since: datetime | None = None,
               limit: int | None = None, *, until: datetime | None = None,
               rotation_id: str | None = None,
               triggers: Collection[str] = ()) -> list[StoredEvent]:
        """Audit rows in the order written, optionally of one target, from ``since`` to
        ``until`` (both included), of one rotation, of rotations started by ``triggers``.

        With ``limit``, the latest ``limit`` matching rows (still oldest first).
        """
        ...

    def rotations(self, target: str | None = None,
                  status: Status | None = None) -> list[Rotation]:
        """Rotations, oldest first, optionally of one target and/or in one status."""
        ...

    def all_running(self) -> list[Rotation]:
        """Every running rotation, oldest first."""
        ...

    def latest_rotations(self) -> dict[str, Rotation]:
        """The most recently started rotation of each target, by target name."""
        ...

    def last_completed(self, target: str) -> Rotation | None:
        """The latest completed rotation of ``target`` (when its key was last replaced)."""
        ...

    def schedule_facts(self, target: str) -> ScheduleFacts:
        """The last completed rotation of ``target`` and the failures since it."""
        ...

    def all_schedule_facts(self, targets: Collection[str] | None = None,
                           ) -> dict[str, ScheduleFacts]:
        """``schedule_facts`` of every target with any rotation (of ``targets`` only, if
        given), by target name; a target missing has no history
        (``ScheduleFacts(None, 0, None)``)."""
        ...

    def pending_cleanups(self, target: str) -> list[PendingCleanup]:
        """The target's keys still waiting for deletion, oldest first."""
        ...

    def all_pending_cleanups(self) -> list[PendingCleanup]:
        """Every target's keys still waiting for deletion, oldest first."""
        ...
