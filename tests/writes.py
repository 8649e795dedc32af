"""The repository's writes for tests that set up rows by hand, each under a lease.

Every write of the ``RotationRepository`` port takes the lease it is made under; a test
that is not about leases writes as one holder, ``tests``, re-acquiring the target's lease
for each write (a holder may always re-acquire its own lease).
"""

from __future__ import annotations

from datetime import UTC, datetime

from rotator.core.model import AuditEvent, Rotation
from rotator.core.ports import Lease, PendingCleanup, RotationRepository

HOLDER = "tests"


def lease(repo: RotationRepository, target: str) -> Lease:
    held = repo.acquire_lease(target, HOLDER, 3600, datetime.now(UTC))
    assert held is not None, f"another holder has {target!r}'s lease"
    return held


def insert_rotation(repo: RotationRepository, rotation: Rotation) -> None:
    repo.insert_rotation(rotation, lease(repo, rotation.target))


def save_rotation(repo: RotationRepository, rotation: Rotation) -> None:
    repo.save_rotation(rotation, lease(repo, rotation.target))


def record(repo: RotationRepository, event: AuditEvent) -> None:
    repo.record(event, lease(repo, event.target))


def add_cleanup(repo: RotationRepository, item: PendingCleanup, now: datetime) -> None:
    repo.add_cleanup(item, now, lease(repo, item.target))


def resolve_cleanup(repo: RotationRepository, target: str, key_id: str,
                    now: datetime) -> None:
    repo.resolve_cleanup(target, key_id, now, lease(repo, target))
