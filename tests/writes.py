"""The repository's writes for tests that set up rows by hand, each under a lease.

Every write of the ``RotationRepository`` port takes the lease it is made under; a test
that is not about leases writes as one holder, ``tests``, taking the target's lease for
each write and releasing it after, so a daemon started later finds the target free.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from rotator.core.model import AuditEvent, Rotation
from rotator.core.ports import Lease, PendingCleanup, RotationRepository

HOLDER = "tests"


@contextmanager
def lease(repo: RotationRepository, target: str) -> Iterator[Lease]:
    held = repo.acquire_lease(target, HOLDER, 3600, datetime.now(UTC))
    assert held is not None, f"another holder has {target!r}'s lease"
    try:
        yield held
    finally:
        repo.release_lease(target, HOLDER)


def insert_rotation(repo: RotationRepository, rotation: Rotation) -> None:
    with lease(repo, rotation.target) as held:
        repo.insert_rotation(rotation, held)


def save_rotation(repo: RotationRepository, rotation: Rotation) -> None:
    with lease(repo, rotation.target) as held:
        repo.save_rotation(rotation, held)


def record(repo: RotationRepository, event: AuditEvent) -> None:
    with lease(repo, event.target) as held:
        repo.record(event, held)


def add_cleanup(repo: RotationRepository, item: PendingCleanup, now: datetime) -> None:
    with lease(repo, item.target) as held:
        repo.add_cleanup(item, now, held)


def resolve_cleanup(repo: RotationRepository, target: str, key_id: str,
                    now: datetime) -> None:
    with lease(repo, target) as held:
        repo.resolve_cleanup(target, key_id, now, held)
