"""``SqlRepository``: the ``RotationRepository`` port on SQLite and PostgreSQL.

Every method is one short transaction. The rules that matter under concurrency are the
database's, not ours: a partial unique index allows one running rotation per target,
leases are taken with a single ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` (so two
replicas can never both win), cleanups are added with ``ON CONFLICT DO NOTHING``, and
triggers keep ``rotation_events`` append-only.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, case, delete, exists, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import Select

from rotator.adapters.clock import SYSTEM_CLOCK
from rotator.adapters.sql import queries
from rotator.adapters.sql.backend import SQLITE, SUPPORTED, backend
from rotator.adapters.sql.queries import rotation_from_row
from rotator.adapters.sql.tables import leases, pending_cleanups, rotation_events, rotations
from rotator.core.errors import LeaseHeld
from rotator.core.model import AuditEvent, Rotation, ScheduleFacts, Status, StoredEvent
from rotator.core.ports import PendingCleanup
from rotator.core.vocabulary import EventKind

__all__ = ["SqlRepository"]

_RUNNING = str(Status.RUNNING)


def _rotation_values(rotation: Rotation, now: datetime) -> dict[str, Any]:
    return {
        "rotation_id": rotation.rotation_id,
        "target": rotation.target,
        "service_account": rotation.service_account,
        "trigger": rotation.trigger,
        "actor": rotation.actor,
        "grace_seconds": rotation.grace_seconds,
        "started_at": rotation.started_at,
        "step": str(rotation.step),
        "status": str(rotation.status),
        "old_key_id": rotation.old_key_id,
        "old_version": rotation.old_version,
        "new_key_id": rotation.new_key_id,
        "new_fingerprint": rotation.new_fingerprint,
        "new_version": rotation.new_version,
        "grace_ends_at": rotation.grace_ends_at,
        "finished_at": rotation.finished_at,
        "reason": rotation.reason,
        "recreate_count": rotation.recreate_count,
        **_failure_values(rotation),
        "updated_at": now,
    }


def _failure_values(rotation: Rotation) -> dict[str, Any]:
    failure = rotation.failure
    return {
        "failure_step": None if failure is None or failure.step is None else str(failure.step),
        "failure_code": None if failure is None else str(failure.code),
        "failure_message": None if failure is None else failure.message,
        "rollback_blocked": rotation.rollback_blocked,
    }


def _running_of(target: str) -> Select[Any]:
    return select(rotations).where(rotations.c.target == target, rotations.c.status == _RUNNING)


class SqlRepository:
    """Rotations, audit trail, leases and cleanups in one SQL database.

    ``clock`` supplies ``updated_at`` and the default ``at`` of audit rows (timezone-aware
    UTC); lease and cleanup methods take ``now`` explicitly, as the port says.
    """

    def __init__(self, engine: Engine,
                 clock: Callable[[], datetime] = SYSTEM_CLOCK.now) -> None:
        self.engine = engine
        self._clock = clock
        name = backend(engine)
        if name not in SUPPORTED:
            raise ValueError(f"SqlRepository supports sqlite and postgresql, not {name}")
        self._insert = sqlite.insert if name == SQLITE else postgresql.insert

    # --- rotations ----------------------------------------------------------------------

    def insert_rotation(self, rotation: Rotation) -> None:
        """Record a new rotation; ``LeaseHeld`` if its target already has a running one."""
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(rotations).values(_rotation_values(rotation, self._clock())))
        except IntegrityError as exc:
            self._raise_if_running(rotation, exc)
            raise

    def save_rotation(self, rotation: Rotation) -> None:
        """Persist the new state of a recorded rotation; ``LookupError`` if there is none."""
        values = _rotation_values(rotation, self._clock())
        del values["rotation_id"]
        try:
            with self.engine.begin() as conn:
                result = conn.execute(
                    update(rotations)
                    .where(rotations.c.rotation_id == rotation.rotation_id)
                    .values(values)
                )
        except IntegrityError as exc:
            self._raise_if_running(rotation, exc)
            raise
        if result.rowcount != 1:
            raise LookupError(f"no rotation {rotation.rotation_id!r} to save")

    def _raise_if_running(self, rotation: Rotation, exc: IntegrityError) -> None:
        """Turn the partial unique index's violation into ``LeaseHeld``; else return."""
        if rotation.status != Status.RUNNING:
            return
        other = self.running_rotation(rotation.target)
        if other is not None and other.rotation_id != rotation.rotation_id:
            raise LeaseHeld(
                f"target {rotation.target!r} already has a running rotation",
                target=rotation.target, rotation_id=other.rotation_id,
            ) from exc

    def get_rotation(self, rotation_id: str) -> Rotation | None:
        with self.engine.connect() as conn:
            query = select(rotations).where(rotations.c.rotation_id == rotation_id)
            row = conn.execute(query).mappings().first()
        return None if row is None else rotation_from_row(row)

    def running_rotation(self, target: str) -> Rotation | None:
        with self.engine.connect() as conn:
            row = conn.execute(_running_of(target)).mappings().first()
        return None if row is None else rotation_from_row(row)

    def protected_key_ids(self, service_account: str, except_rotation: str) -> set[str]:
        """Old and new key ids of the *other* running rotations of ``service_account``."""
        query = select(rotations.c.old_key_id, rotations.c.new_key_id).where(
            rotations.c.service_account == service_account,
            rotations.c.status == _RUNNING,
            rotations.c.rotation_id != except_rotation,
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return {key_id for row in rows for key_id in row if key_id is not None}

    # --- the audit trail ----------------------------------------------------------------

    def record(self, event: AuditEvent) -> None:
        """Append one audit row; ``at`` defaults to now (UTC)."""
        values = {
            "rotation_id": event.rotation_id, "target": event.target, "step": event.step,
            # Plain text: the vocabulary's members are str subclasses, and a driver's
            # adapter might spell an enum by its name rather than its value.
            "kind": str(event.kind), "action": str(event.action),
            "result": None if event.result is None else str(event.result),
            "key_id": event.key_id, "fingerprint": event.fingerprint,
            "vault_version": event.vault_version, "request_id": event.request_id,
            "op_id": event.op_id, "detail": event.detail, "at": event.at or self._clock(),
        }
        with self.engine.begin() as conn:
            conn.execute(insert(rotation_events).values(values))

    def open_intents(self, rotation_id: str) -> list[AuditEvent]:
        """Intents of ``rotation_id`` with no outcome row of the same ``op_id``, in order.

        An intent without an ``op_id`` can never be paired, so it always counts as open.
        """
        outcome = rotation_events.alias("outcome")
        query = (
            select(rotation_events)
            .where(
                rotation_events.c.rotation_id == rotation_id,
                rotation_events.c.kind == str(EventKind.INTENT),
                ~exists().where(
                    outcome.c.rotation_id == rotation_events.c.rotation_id,
                    outcome.c.op_id == rotation_events.c.op_id,
                    outcome.c.kind == str(EventKind.OUTCOME),
                ),
            )
            .order_by(rotation_events.c.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [queries.event_from_row(row).to_event() for row in rows]

    # --- leases -------------------------------------------------------------------------

    def acquire_lease(self, target: str, holder: str, ttl_seconds: float,
                      now: datetime) -> bool:
        """Take (or extend) the lease of ``target`` if it is free, expired, or ours.

        One atomic statement; returns whether ``holder`` holds the lease afterwards.
        """
        expires = now + timedelta(seconds=ttl_seconds)
        stmt = self._insert(leases).values(
            target=target, holder=holder, acquired_at=now, expires_at=expires
        )
        upsert = stmt.on_conflict_do_update(
            index_elements=[leases.c.target],
            set_={
                "holder": stmt.excluded.holder,
                # Re-acquiring our own lease keeps the time we first took it.
                "acquired_at": case(
                    (leases.c.holder == holder, leases.c.acquired_at),
                    else_=stmt.excluded.acquired_at,
                ),
                "expires_at": stmt.excluded.expires_at,
            },
            where=or_(leases.c.expires_at < now, leases.c.holder == holder),
        ).returning(leases.c.holder)
        with self.engine.begin() as conn:
            row = conn.execute(upsert).first()
        return row is not None

    def renew_lease(self, target: str, holder: str, ttl_seconds: float,
                    now: datetime) -> bool:
        """Push the expiry of our lease to ``now + ttl``; ``False`` if it is not ours."""
        stmt = (
            update(leases)
            .where(leases.c.target == target, leases.c.holder == holder)
            .values(expires_at=now + timedelta(seconds=ttl_seconds))
        )
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def lease_of(self, target: str) -> tuple[str, datetime] | None:
        """Who holds the lease of ``target`` and until when (possibly already lapsed)."""
        query = select(leases.c.holder, leases.c.expires_at).where(leases.c.target == target)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else (row.holder, row.expires_at)

    def release_lease(self, target: str, holder: str) -> None:
        """Give the lease back, if it is ours (someone else's lease is left alone)."""
        with self.engine.begin() as conn:
            conn.execute(
                delete(leases).where(leases.c.target == target, leases.c.holder == holder)
            )

    # --- pending cleanups ---------------------------------------------------------------

    def add_cleanup(self, item: PendingCleanup, now: datetime) -> None:
        """Note a key to delete later; a no-op if it is already noted and unresolved."""
        stmt = self._insert(pending_cleanups).values(
            target=item.target, service_account=item.service_account, key_id=item.key_id,
            rotation_id=item.rotation_id, reason=item.reason, created_at=now,
        ).on_conflict_do_nothing(
            index_elements=[pending_cleanups.c.target, pending_cleanups.c.key_id],
            index_where=pending_cleanups.c.resolved_at.is_(None),
        )
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def pending_cleanups(self, target: str) -> list[PendingCleanup]:
        """Unresolved cleanups of ``target``, oldest first."""
        with self.engine.connect() as conn:
            return queries.unresolved_cleanups(conn, target)

    def resolve_cleanup(self, target: str, key_id: str, now: datetime) -> None:
        """Mark the unresolved cleanup of ``key_id`` done (a no-op if there is none)."""
        stmt = (
            update(pending_cleanups)
            .where(and_(
                pending_cleanups.c.target == target,
                pending_cleanups.c.key_id == key_id,
                pending_cleanups.c.resolved_at.is_(None),
            ))
            .values(resolved_at=now)
        )
        with self.engine.begin() as conn:
            conn.execute(stmt)

    # --- the RotationReader port: what the daemon, status, audit and verify read --------

    def events(self, target: str | None = None, since: datetime | None = None,
               limit: int | None = None) -> list[StoredEvent]:
        """Audit rows, oldest first (see ``queries.events``)."""
        with self.engine.connect() as conn:
            return queries.events(conn, target, since, limit)

    def latest_rotations(self) -> dict[str, Rotation]:
        """The most recently started rotation of each target."""
        with self.engine.connect() as conn:
            return queries.latest_rotations(conn)

    def last_completed(self, target: str) -> Rotation | None:
        """The latest completed rotation of ``target``."""
        with self.engine.connect() as conn:
            return queries.last_completed(conn, target)

    def rotations(self, target: str | None = None,
                  status: Status | None = None) -> list[Rotation]:
        """Rotations, oldest first, optionally filtered by target and status."""
        with self.engine.connect() as conn:
            return queries.rotations_where(conn, target, status)

    def all_running(self) -> list[Rotation]:
        """Every running rotation, oldest first."""
        with self.engine.connect() as conn:
            return queries.all_running(conn)

    def schedule_facts(self, target: str) -> ScheduleFacts:
        """The last completed rotation of ``target`` and the failures since."""
        with self.engine.connect() as conn:
            return queries.schedule_facts(conn, target)

    def all_pending_cleanups(self) -> list[PendingCleanup]:
        """Unresolved cleanups of every target, oldest first."""
        with self.engine.connect() as conn:
            return queries.unresolved_cleanups(conn)
