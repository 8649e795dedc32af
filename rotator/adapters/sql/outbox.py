"""``SqlOutbox``: notices waiting for delivery, one row per notice and sink.

``add`` writes inside a transaction the caller already holds (the repository's save of a
rotation, its audit row), so the notice and the state change that caused it commit or
vanish together; ``enqueue`` is the same in a transaction of its own (the sweep's
conditions, ``verify``'s stray keys). ``(sink, dedupe_key)`` is unique and a second add is
``ON CONFLICT DO NOTHING``.

A dispatcher ``claim``s due rows before sending them: one conditional UPDATE per row,
which only one replica can win until ``claimed_until`` passes, so replicas do not all
send the same row at once; a dispatcher killed mid-send leaves its claim to lapse, and the
row is sent again (at least once: the receiver de-duplicates by ``delivery_id``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from rotator.adapters.sql.backend import SQLITE, backend
from rotator.adapters.sql.tables import notification_outbox
from rotator.core.notices import Notice, Route, routed

__all__ = ["Delivery", "OutboxRow", "SqlOutbox"]

_T = notification_outbox
_RACE_SLACK = 8
# The longest error text kept: the first line of a status or an exception's type.
_ERROR_MAX = 500


@dataclass(frozen=True, slots=True)
class Delivery:
    """A claimed row, as the dispatcher sends it."""

    id: int
    delivery_id: str
    sink: str
    event: str
    notice: str       # ``Notice.as_json``: the body is built from it
    attempts: int     # failed attempts before this one


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A row as ``rows`` reads it (status, tests, the docs' queries)."""

    delivery_id: str
    sink: str
    event: str
    target: str
    dedupe_key: str
    attempts: int
    last_error: str | None
    next_attempt_at: datetime
    delivered_at: datetime | None


class SqlOutbox:
    """The ``notification_outbox`` table; ``routes`` say which sink wants which event.

    ``writes`` is the repository's SQLite write turn (``SqlRepository.writes_held``), so
    this process's writers take turns on one file; PostgreSQL needs none.
    """

    def __init__(self, engine: Engine, routes: Sequence[Route],
                 writes: AbstractContextManager[Any] | None = None) -> None:
        self.engine = engine
        self.routes = tuple(routes)
        self._insert = sqlite.insert if backend(engine) == SQLITE else postgresql.insert
        self._writes: AbstractContextManager[Any] = writes or nullcontext()

    def add(self, conn: Connection, notices: Iterable[Notice], now: datetime) -> int:
        """Insert a row per notice and sink that wants it, in ``conn``'s transaction; the
        number of rows new (a notice already there is left as it is)."""
        added = 0
        for sink, notice in routed(notices, self.routes):
            stmt = self._insert(_T).values(
                delivery_id=str(uuid.uuid4()), sink=sink, dedupe_key=notice.dedupe_key,
                event=str(notice.event), target=notice.target, rotation_id=notice.rotation_id,
                notice=notice.as_json(), created_at=now, attempts=0, next_attempt_at=now,
            ).on_conflict_do_nothing(index_elements=[_T.c.sink, _T.c.dedupe_key])
            added += conn.execute(stmt.returning(_T.c.id)).first() is not None
        return added

    def enqueue(self, notices: Iterable[Notice], now: datetime) -> int:
        """``add`` in a transaction of its own."""
        notices = list(notices)
        if not routed(notices, self.routes):
            return 0
        with self._writes, self.engine.begin() as conn:
            return self.add(conn, notices, now)

    def claim(self, holder: str, now: datetime, hold_seconds: float,
              limit: int = 20, sinks: Sequence[str] | None = None) -> list[Delivery]:
        """Up to ``limit`` due rows (of ``sinks``), each now held by ``holder`` for
        ``hold_seconds``.

        Due: not delivered, its next attempt come, and no live claim. A row another
        replica claimed between the read and the update is skipped.
        """
        due = and_(_T.c.delivered_at.is_(None), _T.c.next_attempt_at <= now,
                   or_(_T.c.claimed_until.is_(None), _T.c.claimed_until <= now))
        if sinks is not None:
            due = and_(due, _T.c.sink.in_(list(sinks)))
        # A few more candidates than asked for: rows another replica wins meanwhile are
        # skipped, and this one claims the next instead of coming back empty.
        query = (select(_T).where(due).order_by(_T.c.next_attempt_at, _T.c.id)
                 .limit(limit + _RACE_SLACK))
        with self.engine.connect() as conn:
            candidates = conn.execute(query).mappings().all()
        until = now + timedelta(seconds=hold_seconds)
        claimed: list[Delivery] = []
        for row in candidates:
            if len(claimed) == limit:
                break
            stmt = update(_T).where(_T.c.id == row["id"], due).values(
                claimed_by=holder, claimed_until=until)
            with self._writes, self.engine.begin() as conn:
                if conn.execute(stmt).rowcount != 1:
                    continue
            claimed.append(Delivery(row["id"], row["delivery_id"], row["sink"], row["event"],
                                    row["notice"], row["attempts"]))
        return claimed

    def delivered(self, delivery: Delivery, now: datetime) -> None:
        """The receiver took it: the row is done (whoever holds it now)."""
        with self._writes, self.engine.begin() as conn:
            conn.execute(update(_T).where(_T.c.id == delivery.id, _T.c.delivered_at.is_(None))
                         .values(delivered_at=now, attempts=_T.c.attempts + 1,
                                 claimed_by=None, claimed_until=None, last_error=None))

    def failed(self, delivery: Delivery, holder: str, error: str,
               next_attempt_at: datetime) -> None:
        """An attempt failed: count it, keep why, and free the row for its next attempt.

        Only the claim's holder writes it back: a claim that lapsed while this attempt
        hung belongs to whoever took it next.
        """
        with self._writes, self.engine.begin() as conn:
            conn.execute(update(_T).where(
                _T.c.id == delivery.id, _T.c.delivered_at.is_(None),
                _T.c.claimed_by == holder,
            ).values(attempts=_T.c.attempts + 1, last_error=error[:_ERROR_MAX],
                     next_attempt_at=next_attempt_at, claimed_by=None, claimed_until=None))

    def pending(self) -> dict[str, int]:
        """Rows not delivered yet, by sink (every routed sink named, 0 included)."""
        query = (select(_T.c.sink, func.count()).where(_T.c.delivered_at.is_(None))
                 .group_by(_T.c.sink))
        with self.engine.connect() as conn:
            counts = {sink: int(n) for sink, n in conn.execute(query).all()}
        return {**{route.sink: 0 for route in self.routes}, **counts}

    def rows(self, target: str | None = None) -> list[OutboxRow]:
        """Every row (of ``target``), oldest first."""
        query = select(_T).order_by(_T.c.id)
        if target is not None:
            query = query.where(_T.c.target == target)
        with self.engine.connect() as conn:
            found = conn.execute(query).mappings().all()
        return [OutboxRow(r["delivery_id"], r["sink"], r["event"], r["target"],
                          r["dedupe_key"], r["attempts"], r["last_error"],
                          r["next_attempt_at"], r["delivered_at"]) for r in found]

