"""Read-only queries over the SQL store: what the daemon, status, audit and verify read.

Each function takes a ``Connection`` (so a caller may run several in one transaction);
``SqlRepository`` exposes them as methods that open their own. Row-to-value conversion
(``rotation_from_row``, ``event_from_row``) lives here too and is shared with the
repository.
"""

from __future__ import annotations

from collections.abc import Collection, Generator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, func, or_, select, true
from sqlalchemy.sql import Select

from rotator.adapters.sql.tables import pending_cleanups, rotation_events, rotations
from rotator.core.grace import GracePolicy
from rotator.core.model import (
    Failure,
    FailureCode,
    Rotation,
    ScheduleFacts,
    SecretRef,
    Status,
    Step,
    StoredEvent,
)
from rotator.core.ports import PendingCleanup
from rotator.core.vocabulary import EventKind

__all__ = [
    "STREAM_BATCH",
    "all_running",
    "all_schedule_facts",
    "chain_head_query",
    "chain_rows",
    "event_from_row",
    "events",
    "last_completed",
    "latest_rotations",
    "rotation_from_row",
    "rotations_where",
    "schedule_facts",
    "stream_events",
    "unresolved_cleanups",
]

# Rows fetched at a time by the streaming reads (a server-side cursor on PostgreSQL).
STREAM_BATCH = 500


def rotation_from_row(row: RowMapping) -> Rotation:
    """A ``rotations`` row as a ``Rotation``."""
    return Rotation(
        rotation_id=row["rotation_id"],
        target=row["target"],
        service_account=row["service_account"],
        trigger=row["trigger"],
        actor=row["actor"],
        grace_seconds=float(row["grace_seconds"]),
        started_at=row["started_at"],
        step=Step(row["step"]),
        status=Status(row["status"]),
        old_key_id=row["old_key_id"],
        old_version=row["old_version"],
        new_key_id=row["new_key_id"],
        new_fingerprint=row["new_fingerprint"],
        new_version=row["new_version"],
        grace_ends_at=row["grace_ends_at"],
        finished_at=row["finished_at"],
        reason=row["reason"],
        recreate_count=row["recreate_count"],
        failure=_failure_from_row(row),
        rollback_blocked=row["rollback_blocked"],
        manual_reason=row["manual_reason"],
        usage_grace=_usage_grace_from_row(row),
        provider=row["provider"],
        vault_ref=_ref_from_row(row),
    )


def _ref_from_row(row: RowMapping) -> SecretRef | None:
    mount, path, field = row["vault_mount"], row["vault_path"], row["vault_field"]
    if mount is None or path is None or field is None:
        return None   # a row from before revision 0009
    return SecretRef(mount, path, field)


def _usage_grace_from_row(row: RowMapping) -> GracePolicy | None:
    quiet, most = row["quiet_period"], row["max_grace"]
    return None if quiet is None or most is None else GracePolicy(float(quiet), float(most))


def _failure_from_row(row: RowMapping) -> Failure | None:
    if row["failure_code"] is None:
        return None   # no failure, or a row from before the fields were stored
    step = row["failure_step"]
    return Failure(None if step is None else Step(step), FailureCode(row["failure_code"]),
                   row["failure_message"] or "")


def event_from_row(row: RowMapping) -> StoredEvent:
    """A ``rotation_events`` row as a ``StoredEvent``."""
    return StoredEvent(
        id=row["id"], at=row["at"], rotation_id=row["rotation_id"], target=row["target"],
        step=row["step"], kind=EventKind(row["kind"]), action=row["action"],
        result=row["result"], key_id=row["key_id"], fingerprint=row["fingerprint"],
        vault_version=row["vault_version"], request_id=row["request_id"],
        op_id=row["op_id"], detail=row["detail"], lease_generation=row["lease_generation"],
        chain_seq=row["chain_seq"], chain_hash=row["chain_hash"],
    )


def _streamed(conn: Connection, query: Select[Any]) -> Generator[RowMapping]:
    # yield_per: a server-side cursor on PostgreSQL, STREAM_BATCH rows per fetch; SQLite's
    # cursor steps through the rows as they are read.
    # Closed with the generator: a server-side cursor must not outlive its connection.
    with conn.execution_options(yield_per=STREAM_BATCH).execute(query) as result:
        yield from result.mappings()


def stream_events(conn: Connection, target: str | None = None,
                  since: datetime | None = None, *, until: datetime | None = None,
                  rotation_id: str | None = None,
                  triggers: Collection[str] = ()) -> Generator[RowMapping]:
    """Audit rows in the order they were written, streamed: what an export reads (the
    filters are ``events``'s)."""
    query = _events_of(target, since, until=until, rotation_id=rotation_id, triggers=triggers)
    return _streamed(conn, query.order_by(rotation_events.c.id))


def chain_rows(conn: Connection, target: str | None = None) -> Generator[RowMapping]:
    """Audit rows by target, then id, streamed: what ``walk_chains`` reads."""
    query = _events_of(target)
    return _streamed(conn, query.order_by(rotation_events.c.target, rotation_events.c.id))


def chain_head_query(target: str) -> Select[Any]:
    """The last event of ``target``'s chain: the one the next event links to."""
    return (select(rotation_events)
            .where(rotation_events.c.target == target, rotation_events.c.chain_seq.is_not(None))
            .order_by(rotation_events.c.chain_seq.desc()).limit(1))


def events(conn: Connection, target: str | None = None, since: datetime | None = None,
           limit: int | None = None, *, until: datetime | None = None,
           rotation_id: str | None = None,
           triggers: Collection[str] = ()) -> list[StoredEvent]:
    """Audit rows in the order they were written, optionally for one target, from ``since``
    to ``until`` (both included), of one rotation, of the rotations started by one of
    ``triggers``.

    With ``limit``, the *latest* ``limit`` matching rows (still oldest first).
    """
    query = _events_of(target, since, until=until, rotation_id=rotation_id,
                       triggers=triggers)
    if limit is None:
        rows = conn.execute(query.order_by(rotation_events.c.id)).mappings().all()
        return [event_from_row(row) for row in rows]
    if limit < 0:
        raise ValueError(f"limit must be >= 0, not {limit}")
    latest = conn.execute(query.order_by(rotation_events.c.id.desc()).limit(limit))
    return [event_from_row(row) for row in reversed(latest.mappings().all())]


def _events_of(target: str | None, since: datetime | None = None, *,
               until: datetime | None = None, rotation_id: str | None = None,
               triggers: Collection[str] = ()) -> Select[Any]:
    query = select(rotation_events)
    if target is not None:
        query = query.where(rotation_events.c.target == target)
    if since is not None:
        query = query.where(rotation_events.c.at >= since)
    if until is not None:
        query = query.where(rotation_events.c.at <= until)
    if rotation_id is not None:
        query = query.where(rotation_events.c.rotation_id == rotation_id)
    if triggers:
        # The trigger is the rotation's: an event of one started by one of them.
        started = select(rotations.c.rotation_id).where(rotations.c.trigger.in_(triggers))
        query = query.where(rotation_events.c.rotation_id.in_(started))
    return query


def rotations_where(conn: Connection, target: str | None = None,
                    status: Status | None = None) -> list[Rotation]:
    """Rotations, oldest first, optionally of one target and/or in one status."""
    query = select(rotations)
    if target is not None:
        query = query.where(rotations.c.target == target)
    if status is not None:
        query = query.where(rotations.c.status == str(status))
    query = query.order_by(rotations.c.started_at, rotations.c.rotation_id)
    return [rotation_from_row(row) for row in conn.execute(query).mappings()]


def all_running(conn: Connection) -> list[Rotation]:
    """Every running rotation (what a starting daemon must resume), oldest first."""
    return rotations_where(conn, status=Status.RUNNING)


def latest_rotations(conn: Connection) -> dict[str, Rotation]:
    """The most recently started rotation of each target, by target name."""
    rank = func.row_number().over(
        partition_by=rotations.c.target,
        order_by=(rotations.c.started_at.desc(), rotations.c.updated_at.desc(),
                  rotations.c.rotation_id.desc()),
    ).label("rank")
    ranked = select(rotations, rank).subquery()
    query = (
        select(*[ranked.c[column.name] for column in rotations.columns])
        .where(ranked.c.rank == 1)
        .order_by(ranked.c.target)
    )
    return {row["target"]: rotation_from_row(row) for row in conn.execute(query).mappings()}


def last_completed(conn: Connection, target: str) -> Rotation | None:
    """The latest completed rotation of ``target`` (when its key was last replaced)."""
    query = (
        select(rotations)
        .where(rotations.c.target == target, rotations.c.status == str(Status.COMPLETED))
        .order_by(rotations.c.finished_at.desc().nulls_last(), rotations.c.started_at.desc())
        .limit(1)
    )
    row = conn.execute(query).mappings().first()
    return None if row is None else rotation_from_row(row)


def unresolved_cleanups(conn: Connection, target: str | None = None) -> list[PendingCleanup]:
    """Keys still waiting for deletion, oldest first, optionally of one target."""
    query = select(pending_cleanups).where(pending_cleanups.c.resolved_at.is_(None))
    if target is not None:
        query = query.where(pending_cleanups.c.target == target)
    query = query.order_by(pending_cleanups.c.created_at, pending_cleanups.c.id)
    return [
        PendingCleanup(
            target=row["target"], service_account=row["service_account"],
            key_id=row["key_id"], rotation_id=row["rotation_id"], reason=row["reason"],
            provider=row["provider"],
        )
        for row in conn.execute(query).mappings()
    ]


_FAILED = (str(Status.FAILED), str(Status.ROLLED_BACK))


def all_schedule_facts(conn: Connection,
                       targets: Collection[str] | None = None) -> dict[str, ScheduleFacts]:
    """``schedule_facts`` of every target with a history (or of ``targets``), in two
    statements whatever their number: a daemon's sweep reads them at each poll.
    """
    rank = func.row_number().over(
        partition_by=rotations.c.target,
        order_by=(rotations.c.finished_at.desc().nulls_last(), rotations.c.started_at.desc()),
    ).label("rank")
    chosen = (rotations.c.target.in_(sorted(targets)) if targets is not None
              else true())
    ranked = select(rotations, rank).where(
        rotations.c.status == str(Status.COMPLETED), chosen).subquery()
    done = {row["target"]: rotation_from_row(row) for row in conn.execute(
        select(*[ranked.c[column.name] for column in rotations.columns])
        .where(ranked.c.rank == 1)).mappings()}
    last = select(ranked.c.target, ranked.c.started_at).where(ranked.c.rank == 1).subquery()
    failures = conn.execute(
        select(rotations.c.target, func.count(), func.max(rotations.c.finished_at))
        .select_from(rotations.outerjoin(last, last.c.target == rotations.c.target))
        .where(rotations.c.status.in_(_FAILED), chosen,
               or_(last.c.started_at.is_(None), rotations.c.started_at > last.c.started_at))
        .group_by(rotations.c.target)).all()
    facts = {target: ScheduleFacts(rotation, 0, None) for target, rotation in done.items()}
    for target, count, latest in failures:
        facts[target] = ScheduleFacts(done.get(target), int(count), _as_utc(latest))
    return facts


def _as_utc(moment: datetime | str | None) -> datetime | None:
    if isinstance(moment, str):  # SQLite's max() drops the column type
        return datetime.fromisoformat(moment).replace(tzinfo=UTC)
    return moment


def schedule_facts(conn: Connection, target: str) -> ScheduleFacts:
    done = last_completed(conn, target)
    query = select(func.count(), func.max(rotations.c.finished_at)).where(
        rotations.c.target == target, rotations.c.status.in_(_FAILED))
    if done is not None:
        query = query.where(rotations.c.started_at > done.started_at)
    count, latest = conn.execute(query).one()
    return ScheduleFacts(done, int(count), _as_utc(latest))
