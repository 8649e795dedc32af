"""``SqlRepository``: the ``RotationRepository`` port on SQLite and PostgreSQL.

Every method is one short transaction. The rules that matter under concurrency are the
database's, not ours: a partial unique index allows one running rotation per target; a
lease is taken by a compare-and-set on its generation (so two replicas can never both
win, and every acquisition is a new generation); every write of a rotation's state is a
single statement conditioned on ``EXISTS`` the writer's lease generation (``FOR SHARE``
on PostgreSQL, so a take-over waits for a write in progress and a write after the
take-over matches nothing); cleanups are added with ``ON CONFLICT DO NOTHING``; and
triggers keep ``rotation_events`` append-only and a finished rotation final.

Every audit row is chained to the event before it of its target (``_chained``): lock the
target's lease row, read the head, hash the row after it, insert; a unique index on
``(target, chain_seq)`` refuses a second row after the same head (a race the lock does not
cover, on SQLite), and the write is tried again after the new head.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractContextManager, closing, contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Table,
    and_,
    exists,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.sql import Select

from rotator.adapters.clock import SYSTEM_CLOCK
from rotator.adapters.sql import queries
from rotator.adapters.sql.backend import SQLITE, SUPPORTED, backend
from rotator.adapters.sql.outbox import SqlOutbox
from rotator.adapters.sql.queries import rotation_from_row
from rotator.adapters.sql.tables import (
    FINISHED_MESSAGE,
    leases,
    pending_cleanups,
    rotation_events,
    rotations,
)
from rotator.core.audit_chain import ChainReport, chain_hash, walk_chains
from rotator.core.errors import LeaseHeld, LeaseLost, RotationFinished
from rotator.core.model import AuditEvent, Rotation, ScheduleFacts, Status, StoredEvent
from rotator.core.notices import Route, event_notice, rotation_notices
from rotator.core.ports import Lease, PendingCleanup
from rotator.core.secret import Secret
from rotator.core.vocabulary import EventKind

__all__ = ["SqlRepository"]

_RUNNING = str(Status.RUNNING)

# The expiry a released lease is given: free for anyone at once, and with no call of its
# last holder in flight (it released after its last call returned).
RELEASED = datetime(1970, 1, 1, tzinfo=UTC)


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
        "manual_reason": rotation.manual_reason,
        "quiet_period": None if rotation.usage_grace is None else rotation.usage_grace.quiet_period,
        "max_grace": None if rotation.usage_grace is None else rotation.usage_grace.max_grace,
        "provider": rotation.provider,
        **_ref_values(rotation),
        **_failure_values(rotation),
        "updated_at": now,
    }


def _ref_values(rotation: Rotation) -> dict[str, Any]:
    ref = rotation.vault_ref
    return {"vault_mount": None if ref is None else ref.mount,
            "vault_path": None if ref is None else ref.path,
            "vault_field": None if ref is None else ref.field}


def _failure_values(rotation: Rotation) -> dict[str, Any]:
    failure = rotation.failure
    return {
        "failure_step": None if failure is None or failure.step is None else str(failure.step),
        "failure_code": None if failure is None else str(failure.code),
        "failure_message": None if failure is None else failure.message,
        "rollback_blocked": rotation.rollback_blocked,
    }


def _open_intent() -> ColumnElement[bool]:
    """An intent row with no outcome row of the same rotation and ``op_id``."""
    outcome = rotation_events.alias("outcome")
    return and_(
        rotation_events.c.kind == str(EventKind.INTENT),
        ~exists().where(
            outcome.c.rotation_id == rotation_events.c.rotation_id,
            outcome.c.op_id == rotation_events.c.op_id,
            outcome.c.kind == str(EventKind.OUTCOME),
        ),
    )


_OPEN_INTENT = _open_intent()


def _holding(lease: Lease) -> ColumnElement[bool]:
    """True while ``lease`` is still its target's current generation.

    ``FOR SHARE`` (PostgreSQL; SQLite runs one write at a time anyway) locks the lease row
    until the write commits: a take-over's acquisition waits for it, and a write that
    starts after the take-over re-reads the row, finds a new generation and matches nothing.
    """
    return select(leases.c.target).where(
        leases.c.target == lease.target, leases.c.holder == lease.holder,
        leases.c.generation == lease.generation,
    ).with_for_update(read=True).exists()


def _fenced_insert(table: Table, values: dict[str, Any], lease: Lease) -> Any:
    """``INSERT INTO table SELECT values WHERE <lease still held>``: one statement."""
    columns = list(values)
    row = select(*[literal(values[c], type_=table.c[c].type) for c in columns])
    # RETURNING, not rowcount: drivers report no count for some INSERT forms.
    return insert(table).from_select(columns, row.where(_holding(lease))).returning(
        table.c[columns[0]])


# How many times an audit write is tried when another write took the chain head it read.
_CHAIN_ATTEMPTS = 10


def _chain_collision(exc: IntegrityError) -> bool:
    """Whether ``exc`` is the unique index of ``(target, chain_seq)`` refusing a row."""
    return "chain_seq" in str(exc.orig) or "uq_rotation_events_chain" in str(exc.orig)


def _running_of(target: str) -> Select[Any]:
    return select(rotations).where(rotations.c.target == target, rotations.c.status == _RUNNING)


def _lost(lease: Lease) -> LeaseLost:
    return LeaseLost(
        "this process's lease was taken over by another holder: the write was refused "
        "and nothing changed", target=lease.target, generation=lease.generation)


def _renewal(lease: Lease, until: datetime) -> Any:
    """Push ``lease``'s expiry to ``until``, if it is still the target's generation."""
    return (update(leases)
            .where(leases.c.target == lease.target, leases.c.holder == lease.holder,
                   leases.c.generation == lease.generation)
            .values(expires_at=until))


def _same_target(target: str, lease: Lease) -> None:
    if target != lease.target:
        raise ValueError(f"a write of {target!r} under the lease of {lease.target!r}")


class SqlRepository:
    """Rotations, audit trail, leases and cleanups in one SQL database.

    ``clock`` supplies ``updated_at`` and the default ``at`` of audit rows (timezone-aware
    UTC); lease and cleanup methods take ``now`` explicitly, as the port says.
    ``chain_key``, if given, keys the audit chain (``hmac-sha256``): rows written with it
    verify only with it. ``routes``: the notification sinks and their events; a rotation
    saved failed, rolled back or with its rollback blocked, and a probe that finds a
    deleted key alive, add their notices to ``outbox`` in the same transaction.
    """

    def __init__(self, engine: Engine,
                 clock: Callable[[], datetime] = SYSTEM_CLOCK.now,
                 chain_key: Secret | None = None,
                 routes: tuple[Route, ...] = ()) -> None:
        self.engine = engine
        self._clock = clock
        self._chain_key = None if chain_key is None else chain_key.reveal().encode("utf-8")
        name = backend(engine)
        if name not in SUPPORTED:
            raise ValueError(f"SqlRepository supports sqlite and postgresql, not {name}")
        self._insert = sqlite.insert if name == SQLITE else postgresql.insert
        # SQLite takes one writer at a time, and its busy handler is no queue: threads of
        # one process that all wait on it can starve one past the busy timeout ("database
        # is locked"), and the audit chain's head could be read by two before either
        # writes. So this process's write transactions take turns here first; another
        # process is still the busy timeout's and the chain index's to settle.
        self._writes: AbstractContextManager[Any] = (
            threading.RLock() if name == SQLITE else nullcontext())
        self.outbox = SqlOutbox(engine, routes, self._writes)

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """One write transaction, after this process's other SQLite writes (see above)."""
        with self._writes, self.engine.begin() as conn:
            yield conn

    def writes_held(self) -> AbstractContextManager[Any]:
        """Held, no write of this repository is in progress (nor starts): a test's pause
        point freezes the process under it, so a frozen replica never holds SQLite's lock."""
        return self._writes

    # --- rotations ----------------------------------------------------------------------

    def insert_rotation(self, rotation: Rotation, lease: Lease) -> None:
        """Record a new rotation under ``lease``.

        ``LeaseHeld`` if its target already has a running one; ``LeaseLost`` if ``lease``
        is no longer the target's.
        """
        _same_target(rotation.target, lease)
        values = {**_rotation_values(rotation, self._clock()),
                  "lease_generation": lease.generation}
        try:
            with self._writing() as conn:
                written = conn.execute(_fenced_insert(rotations, values, lease)).first()
        except IntegrityError as exc:
            self._raise_if_running(rotation, exc)
            raise
        if written is None:
            raise _lost(lease)

    def save_rotation(self, rotation: Rotation, lease: Lease,
                      ending: AuditEvent | None = None, *,
                      notes: Sequence[AuditEvent] = (),
                      renew_until: datetime | None = None) -> None:
        """Persist the new state of a running rotation under ``lease``.

        In the same transaction: ``notes``, then ``ending``, appended to the audit trail;
        the lease's expiry pushed to ``renew_until`` if given.

        ``LeaseLost`` if ``lease`` is no longer the target's, ``RotationFinished`` if the
        stored rotation has already ended, ``LookupError`` if there is none; in every case
        nothing was written.
        """
        events = [*notes, *([] if ending is None else [ending])]
        for event in events:
            _same_target(event.target, lease)
        self._chain_retried(lambda: self._save_rotation(rotation, lease, events, renew_until))

    def _save_rotation(self, rotation: Rotation, lease: Lease, events: list[AuditEvent],
                       renew_until: datetime | None) -> None:
        values = {**_rotation_values(rotation, self._clock()),
                  "lease_generation": lease.generation}
        del values["rotation_id"]
        stmt = (update(rotations)
                .where(rotations.c.rotation_id == rotation.rotation_id,
                       rotations.c.target == lease.target,
                       rotations.c.status == _RUNNING, _holding(lease))
                .values(values))
        try:
            with self._writing() as conn:
                if events:
                    self._lock_chain(conn, lease)
                if conn.execute(stmt).rowcount == 1:
                    for event in events:
                        self._append_event(conn, event, lease)
                    if renew_until is not None:
                        conn.execute(_renewal(lease, renew_until))
                    now = self._clock()
                    self.outbox.add(conn, rotation_notices(rotation, now), now)
                    return
                # Why nothing matched: a lost lease first, whatever the stored state.
                self._require(conn, lease)
                stored = conn.execute(
                    select(rotations.c.status).where(
                        rotations.c.rotation_id == rotation.rotation_id)).scalar()
        except IntegrityError as exc:
            self._raise_if_running(rotation, exc)
            raise
        except DBAPIError as exc:
            if FINISHED_MESSAGE in str(exc.orig):
                raise RotationFinished(FINISHED_MESSAGE,
                                       rotation_id=rotation.rotation_id) from None
            raise
        if stored is None:
            raise LookupError(f"no rotation {rotation.rotation_id!r} to save")
        if stored != _RUNNING:
            raise RotationFinished(f"{FINISHED_MESSAGE}: it ended {stored}",
                                   rotation_id=rotation.rotation_id)
        raise _lost(lease)

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

    def record(self, event: AuditEvent, lease: Lease) -> None:
        """Append one audit row under ``lease``; ``at`` defaults to now (UTC).

        ``LeaseLost`` (and no row) if ``lease`` is no longer the target's.
        """
        self.record_all([event], lease)

    def record_all(self, events: Sequence[AuditEvent], lease: Lease) -> None:
        """Append ``events`` in order under ``lease``, in one transaction.

        ``LeaseLost`` (and no row) if ``lease`` is no longer the target's.
        """
        for event in events:
            _same_target(event.target, lease)
        if events:
            self._chain_retried(lambda: self._record(events, lease))

    def _record(self, events: Sequence[AuditEvent], lease: Lease) -> None:
        with self._writing() as conn:
            self._lock_chain(conn, lease)
            for event in events:
                if not self._append_event(conn, event, lease):
                    raise _lost(lease)   # rolls back the rows before it

    def _chain_retried(self, write: Callable[[], None]) -> None:
        """``write()``, again while another write takes the chain head it read first."""
        for attempt in range(1, _CHAIN_ATTEMPTS + 1):
            try:
                write()
                return
            except IntegrityError as exc:
                if attempt == _CHAIN_ATTEMPTS or not _chain_collision(exc):
                    raise

    @staticmethod
    def _lock_chain(conn: Connection, lease: Lease) -> None:
        """Hold the lease row of ``lease``'s target until commit, before anything else.

        So the audit writes of one target read its chain head one at a time (PostgreSQL;
        SQLite ignores FOR UPDATE, and there the unique index and a retry settle the rare
        race). Taken first in its transaction: a share lock taken first and raised later
        could deadlock with another write doing the same.
        """
        conn.execute(select(leases.c.generation).where(leases.c.target == lease.target)
                     .with_for_update())

    def _append_event(self, conn: Connection, event: AuditEvent, lease: Lease) -> bool:
        """Insert ``event`` after its target's chain head, fenced; ``False``: lease lost.

        The transaction must have begun with ``_lock_chain``. A row that says a revoked
        key still authenticates, or that an old key was revoked at ``max_grace`` before it
        was seen quiet, enqueues its notice in the same transaction.
        """
        values = self._chained(conn, self._event_values(event, lease))
        if conn.execute(_fenced_insert(rotation_events, values, lease)).first() is None:
            return False
        now = self._clock()
        notice = event_notice(event, now)
        if notice is not None:
            self.outbox.add(conn, [notice], now)
        return True

    def _chained(self, conn: Connection, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` with the place and hash that link them after the target's head."""
        head = conn.execute(queries.chain_head_query(values["target"])).first()
        seq = 1 if head is None else head.chain_seq + 1
        previous = "" if head is None else head.chain_hash
        return {**values, "chain_seq": seq,
                "chain_hash": chain_hash(values, seq, previous, self._chain_key)}

    def _event_values(self, event: AuditEvent, lease: Lease) -> dict[str, Any]:
        return {
            "rotation_id": event.rotation_id, "target": event.target, "step": event.step,
            # Plain text: the vocabulary's members are str subclasses, and a driver's
            # adapter might spell an enum by its name rather than its value.
            "kind": str(event.kind), "action": str(event.action),
            "result": None if event.result is None else str(event.result),
            "key_id": event.key_id, "fingerprint": event.fingerprint,
            "vault_version": event.vault_version, "request_id": event.request_id,
            "op_id": event.op_id, "detail": event.detail, "at": event.at or self._clock(),
            "lease_generation": lease.generation,
        }

    def has_open_intent(self, target: str) -> bool:
        """Whether any rotation of ``target`` has an intent without its outcome row."""
        query = select(rotation_events.c.id).where(
            rotation_events.c.target == target, _OPEN_INTENT).limit(1)
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def open_intents(self, rotation_id: str) -> list[AuditEvent]:
        """Intents of ``rotation_id`` with no outcome row of the same ``op_id``, in order.

        An intent without an ``op_id`` can never be paired, so it always counts as open.
        """
        query = (
            select(rotation_events)
            .where(rotation_events.c.rotation_id == rotation_id, _OPEN_INTENT)
            .order_by(rotation_events.c.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [queries.event_from_row(row).to_event() for row in rows]

    # --- leases -------------------------------------------------------------------------

    def acquire_lease(self, target: str, holder: str, ttl_seconds: float,
                      now: datetime) -> Lease | None:
        """Take the lease of ``target`` if it is free, released, lapsed or ours.

        Every acquisition is a new generation, taken by compare-and-set on the one before,
        so two replicas can never both win and the writes of the holder before us, which
        carry the old generation, are refused from here on. ``None``: another holder's
        lease is live.
        """
        expires = now + timedelta(seconds=ttl_seconds)
        query = select(leases).where(leases.c.target == target).with_for_update()
        with self._writing() as conn:
            prior = conn.execute(query).first()
            if prior is None:
                stmt = self._insert(leases).values(
                    target=target, holder=holder, acquired_at=now, expires_at=expires,
                    generation=1).on_conflict_do_nothing(index_elements=[leases.c.target])
                won = conn.execute(stmt.returning(leases.c.generation)).first() is not None
                return Lease(target, holder, 1) if won else None
            ours = prior.holder == holder and prior.expires_at > RELEASED
            if prior.holder != holder and prior.expires_at >= now:
                return None
            generation = prior.generation + 1
            taken = conn.execute(
                update(leases)
                .where(leases.c.target == target, leases.c.generation == prior.generation)
                .values(holder=holder, expires_at=expires, generation=generation,
                        # Re-acquiring our own live lease keeps the time we first took it.
                        acquired_at=prior.acquired_at if ours else now)).rowcount == 1
        if not taken:
            return None
        # A holder that did not release may have a call still in flight.
        previous = (None if prior.holder == holder or prior.expires_at <= RELEASED
                    else prior.expires_at)
        return Lease(target, holder, generation, previous)

    def renew_lease(self, target: str, holder: str, ttl_seconds: float,
                    now: datetime) -> bool:
        """Push the expiry of our lease to ``now + ttl``; ``False`` if it is not ours.

        By holder, whatever the generation: the daemon's heartbeat, for the targets its
        workers are on. A released lease is not renewed.
        """
        stmt = (
            update(leases)
            .where(leases.c.target == target, leases.c.holder == holder,
                   leases.c.expires_at > RELEASED)
            .values(expires_at=now + timedelta(seconds=ttl_seconds))
        )
        with self._writing() as conn:
            return conn.execute(stmt).rowcount == 1

    def confirm_lease(self, lease: Lease, ttl_seconds: float, now: datetime) -> bool:
        """Extend ``lease`` to ``now + ttl`` if it is still the target's generation."""
        with self._writing() as conn:
            return conn.execute(
                _renewal(lease, now + timedelta(seconds=ttl_seconds))).rowcount == 1

    def lease_of(self, target: str) -> tuple[str, datetime] | None:
        """Who holds the lease of ``target`` and until when; ``None`` if free or released."""
        query = select(leases.c.holder, leases.c.expires_at).where(
            leases.c.target == target, leases.c.expires_at > RELEASED)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else (row.holder, row.expires_at)

    def release_lease(self, target: str, holder: str) -> None:
        """Give the lease back, if it is ours (someone else's lease is left alone).

        The row stays, with its generation, so that the next acquisition follows it.
        """
        with self._writing() as conn:
            conn.execute(
                update(leases).where(leases.c.target == target, leases.c.holder == holder)
                .values(expires_at=RELEASED)
            )

    # --- pending cleanups ---------------------------------------------------------------

    def add_cleanup(self, item: PendingCleanup, now: datetime, lease: Lease) -> None:
        """Note a key to delete later; a no-op if it is already noted and unresolved.

        ``LeaseLost`` (and nothing noted) if ``lease`` is no longer the target's.
        """
        _same_target(item.target, lease)
        values = {"target": item.target, "service_account": item.service_account,
                  "key_id": item.key_id, "rotation_id": item.rotation_id,
                  "reason": item.reason, "created_at": now, "provider": item.provider}
        row = select(*[literal(v, type_=pending_cleanups.c[c].type) for c, v in values.items()])
        stmt = self._insert(pending_cleanups).from_select(
            list(values), row.where(_holding(lease))
        ).on_conflict_do_nothing(
            index_elements=[pending_cleanups.c.target, pending_cleanups.c.key_id],
            index_where=pending_cleanups.c.resolved_at.is_(None),
        ).returning(pending_cleanups.c.id)
        with self._writing() as conn:
            if conn.execute(stmt).first() is None:
                self._require(conn, lease)     # nothing written: already noted, or lost

    def pending_cleanups(self, target: str) -> list[PendingCleanup]:
        """Unresolved cleanups of ``target``, oldest first."""
        with self.engine.connect() as conn:
            return queries.unresolved_cleanups(conn, target)

    def resolve_cleanup(self, target: str, key_id: str, now: datetime, lease: Lease) -> None:
        """Mark the unresolved cleanup of ``key_id`` done (a no-op if there is none).

        ``LeaseLost`` (and nothing changed) if ``lease`` is no longer the target's.
        """
        _same_target(target, lease)
        stmt = (
            update(pending_cleanups)
            .where(and_(
                pending_cleanups.c.target == target,
                pending_cleanups.c.key_id == key_id,
                pending_cleanups.c.resolved_at.is_(None),
            ), _holding(lease))
            .values(resolved_at=now)
        )
        with self._writing() as conn:
            if conn.execute(stmt).rowcount == 0:
                self._require(conn, lease)     # nothing changed: none open, or lost

    def _require(self, conn: Connection, lease: Lease) -> None:
        """``LeaseLost`` unless ``lease`` is still the target's current generation.

        Asked after a conditioned write matched nothing, to tell a lost lease (the write
        was refused) from a write that had nothing to do.
        """
        held = select(leases.c.generation).where(
            leases.c.target == lease.target, leases.c.holder == lease.holder,
            leases.c.generation == lease.generation).with_for_update(read=True)
        if conn.execute(held).first() is None:
            raise _lost(lease)

    # --- the RotationReader port: what the daemon, status, audit and verify read --------

    def events(self, target: str | None = None, since: datetime | None = None,
               limit: int | None = None, *, until: datetime | None = None,
               rotation_id: str | None = None,
               triggers: Collection[str] = ()) -> list[StoredEvent]:
        """Audit rows, oldest first (see ``queries.events``)."""
        with self.engine.connect() as conn:
            return queries.events(conn, target, since, limit, until=until,
                                  rotation_id=rotation_id, triggers=triggers)

    def stream_events(self, target: str | None = None, since: datetime | None = None, *,
                      until: datetime | None = None, rotation_id: str | None = None,
                      triggers: Collection[str] = ()) -> Iterator[StoredEvent]:
        """Audit rows, oldest first, fetched in batches: memory does not grow with them."""
        with self.engine.connect() as conn, closing(queries.stream_events(
                conn, target, since, until=until, rotation_id=rotation_id,
                triggers=triggers)) as rows:
            for row in rows:
                yield queries.event_from_row(row)

    def verify_chains(self, target: str | None = None) -> ChainReport:
        """Walk the audit chain of ``target`` (default: every target), streaming.

        ``KeyRequired`` if the chain is keyed and this repository has no key.
        """
        with self.engine.connect() as conn, closing(queries.chain_rows(conn, target)) as rows:
            return walk_chains(rows, self._chain_key)

    def chain_head(self, target: str) -> StoredEvent | None:
        """The last event of ``target``'s chain (an anchor to keep outside the database)."""
        with self.engine.connect() as conn:
            row = conn.execute(queries.chain_head_query(target)).mappings().first()
        return None if row is None else queries.event_from_row(row)

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

    def all_schedule_facts(self, targets: Collection[str] | None = None,
                           ) -> dict[str, ScheduleFacts]:
        """``schedule_facts`` of every target with a history (or of ``targets``), from one
        read."""
        with self.engine.connect() as conn:
            return queries.all_schedule_facts(conn, targets)

    def all_pending_cleanups(self) -> list[PendingCleanup]:
        """Unresolved cleanups of every target, oldest first."""
        with self.engine.connect() as conn:
            return queries.unresolved_cleanups(conn)
