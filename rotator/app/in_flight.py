"""Words for a rotation already in flight: what a second ``rotate`` of its target says.

A manual rotation asked for while one is in flight joins it rather than start another,
so the operator is told which rotation that is, where it stands and who started it; and
when a live process holds the target's lease, who holds it and until when.
"""

from __future__ import annotations

from datetime import datetime

from rotator.adapters.sql.repository import SqlRepository
from rotator.core.errors import LeaseHeld
from rotator.core.model import Rotation

__all__ = ["describe_in_flight", "lease_held_detail"]


def _at(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def describe_in_flight(rot: Rotation) -> str:
    """``rotation rot_… at step grace (manual, by alice@host, started …)``; an ended
    rotation by its status instead of its step."""
    where = f"ended {rot.status.value}" if rot.is_terminal else f"at step {rot.step.value}"
    return (f"rotation {rot.rotation_id} {where} ({rot.trigger}, by {rot.actor}, started "
            f"{_at(rot.started_at)})")


def lease_held_detail(repo: SqlRepository, target: str, exc: LeaseHeld) -> str:
    """Why a ``rotate`` of ``target`` could not go on: the rotation in flight, the holder."""
    parts = []
    running = repo.running_rotation(target)
    if running is not None:
        parts.append(f"{describe_in_flight(running)} is being driven by another process")
    held = repo.lease_of(target)
    if held is not None:
        holder, until = held
        parts.append(f"lease held by {holder} until {_at(until)}")
    return "; ".join([*parts, exc.message])
