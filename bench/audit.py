"""What reading a large audit trail costs on PostgreSQL.

    python bench/audit.py [--events N] [--targets M] [--runs R] [--seed S]

Fills a schema of its own, migrated with rotator's migrations, with N audit events
(default 1,000,000) over M targets (default 10,000): about ten events per rotation, the
rotations table to match (one in 15 rolled back, one in 20 manual), every event chained
(``chain_seq``, ``chain_hash``) as the repository chains them. Then, R times each (default
50), on targets picked at random: a target's history (what ``rotator audit show TARGET``
reads), its status (what ``rotator status`` reads for one target), and a typical query of
each auditor view (docs/audit.md). Printed: p50 and p95 of each, the table and index
sizes, bytes per rotation, and the EXPLAIN (ANALYZE, BUFFERS) plans of the history and
status statements, with the sequential scans they make named. Goal: history and status
under 50 ms p50, on plans that use the indexes.

Needs the server on 127.0.0.1:5432 (database ``test``, trust auth).
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import harness
from sqlalchemy import Engine, event, text

from rotator.adapters.sql.repository import SqlRepository
from rotator.adapters.sql.schema import make_engine
from rotator.app.status import status
from rotator.core.audit_chain import CONTENT_COLUMNS, chain_hash

EVENTS_PER_ROTATION = 10
DAY = timedelta(days=1)
EVENT_COLUMNS = (*CONTENT_COLUMNS, "chain_seq", "chain_hash")
ROTATION_COLUMNS = ("rotation_id", "target", "service_account", "trigger", "actor",
                    "grace_seconds", "started_at", "step", "status", "old_key_id",
                    "new_key_id", "new_fingerprint", "new_version", "grace_ends_at",
                    "finished_at", "reason", "failure_step", "failure_code",
                    "failure_message", "updated_at", "lease_generation", "manual_reason")

# (step, kind, action, result, which key) of a completed and of a rolled-back rotation.
COMPLETED = (
    ("plan", "note", "started", None, None), ("plan", "note", "plan", "ok", "old"),
    ("create", "intent", "create_key", None, None),
    ("create", "outcome", "create_key", "ok", "new"), ("verify", "note", "probe", "ok", "new"),
    ("store", "intent", "vault_write", None, "new"),
    ("store", "outcome", "vault_write", "ok", "new"),
    ("revoke", "intent", "revoke_key", None, "old"),
    ("revoke", "outcome", "revoke_key", "ok", "old"),
    ("done", "note", "completed", "completed", "new"),
)
ROLLED_BACK = (
    *COMPLETED[:4], ("verify", "note", "probe", "error", "new"),
    ("rollback", "intent", "delete_key", None, "new"),
    ("rollback", "outcome", "delete_key", "ok", "new"),
    ("done", "note", "rolled_back", "rolled_back", "new"),
)


@dataclass
class Filled:
    rotations: int = 0
    events: int = 0
    seconds: float = 0.0


def tsv(values: Iterator[Any]) -> str:
    """One COPY text row: none of the values written here holds a tab or a backslash."""
    return "\t".join("\\N" if v is None else v.isoformat() if isinstance(v, datetime)
                     else str(v) for v in values) + "\n"


def target_rows(index: int, rotations: int, now: datetime, pick: random.Random,
                ) -> tuple[list[str], list[str]]:
    """The rotations and chained events of target ``t<index>``, as COPY rows."""
    target, sa = f"t{index}", f"sa-{index}"
    rotation_rows, event_rows = [], []
    seq, previous, current = 0, "", f"k{index}-0"
    for n in range(rotations):
        rotation_id = f"rot_{index}_{n}"
        started = now - (rotations - n) * 30 * DAY + pick.randrange(86_400) * timedelta(
            seconds=1)
        failed = pick.randrange(15) == 0
        manual = pick.randrange(20) == 0
        new_key = f"k{index}-{n + 1}"
        for i, (step, kind, action, result, which) in enumerate(
                ROLLED_BACK if failed else COMPLETED):
            seq += 1
            row = {"target": target, "rotation_id": rotation_id, "step": step, "kind": kind,
                   "action": action, "result": result,
                   "key_id": {"old": current, "new": new_key, None: None}[which],
                   "fingerprint": None if which != "new" else f"sha256:{n:08x}",
                   "vault_version": n + 1 if action == "vault_write" else None,
                   "request_id": f"req-{index}-{n}-{i}" if kind == "outcome" else None,
                   "op_id": f"op-{i // 2}" if kind in ("intent", "outcome") else None,
                   "detail": "grace 300s" if action == "started" else None,
                   "at": started + i * timedelta(seconds=2), "lease_generation": n + 1}
            previous = chain_hash(row, seq, previous)
            event_rows.append(tsv(iter([*(row[c] for c in CONTENT_COLUMNS), seq, previous])))
        finished = started + len(COMPLETED) * timedelta(seconds=2)
        rotation_rows.append(tsv(iter([
            rotation_id, target, sa, "manual" if manual else "schedule",
            "alice@ops" if manual else "rotator@daemon", 300.0, started, "done",
            "rolled_back" if failed else "completed", current, new_key, f"sha256:{n:08x}",
            None if failed else n + 1, None if failed else started + timedelta(seconds=300),
            finished, "never authenticated" if failed else None,
            "verify" if failed else None, "never_authenticated" if failed else None,
            "the new key never authenticated" if failed else None, finished, n + 1,
            "incident 42" if manual else None])))
        if not failed:
            current = new_key
    return rotation_rows, event_rows


def fill(engine: Engine, events: int, targets: int, seed: int) -> Filled:
    """COPY the rows in, a thousand targets at a time, then ANALYZE."""
    per_target = max(1, events // targets // EVENTS_PER_ROTATION)
    now, pick, filled = datetime.now(UTC), random.Random(seed), Filled()
    start = time.monotonic()
    raw = engine.raw_connection()
    try:
        cursor = raw.driver_connection.cursor()     # psycopg's own: COPY
        for first in range(0, targets, 1000):
            rotation_buffer, event_buffer = io.StringIO(), io.StringIO()
            for index in range(first, min(first + 1000, targets)):
                rotation_rows, event_rows = target_rows(index, per_target, now, pick)
                rotation_buffer.writelines(rotation_rows)
                event_buffer.writelines(event_rows)
                filled.rotations += len(rotation_rows)
                filled.events += len(event_rows)
            for table, columns, buffer in (("rotations", ROTATION_COLUMNS, rotation_buffer),
                                           ("rotation_events", EVENT_COLUMNS, event_buffer)):
                with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    copy.write(buffer.getvalue())
            # A transaction per batch: the engine ends a session idle in one while the
            # next batch is built (idle_in_transaction_session_timeout).
            raw.commit()
        cursor.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()
    filled.seconds = time.monotonic() - start
    return filled


def view_reads(now: datetime) -> dict[str, tuple[str, Callable[[str], dict[str, Any]]]]:
    """A typical query per view: what docs/audit.md has an auditor run."""
    month_ago = now - 30 * DAY
    return {
        "audit_key_lifetimes, one target": (
            "SELECT key_id, live_from, live_until, installed_by, replaced_by, revoked_at "
            "FROM audit_key_lifetimes WHERE target = :t "
            "ORDER BY live_from IS NOT NULL, live_from", lambda t: {"t": t}),
        "audit_current_keys, one target": (
            "SELECT key_id, live_from, age_seconds FROM audit_current_keys "
            "WHERE target = :t", lambda t: {"t": t}),
        "audit_current_keys, older than 90d": (
            "SELECT target, key_id, age_seconds FROM audit_current_keys "
            "WHERE age_seconds > 90 * 86400 ORDER BY age_seconds DESC", lambda t: {}),
        "audit_failed_rotations, 30 days": (
            "SELECT started_at, target, status, failure_code FROM audit_failed_rotations "
            "WHERE started_at >= :since ORDER BY started_at DESC",
            lambda t: {"since": month_ago}),
        "audit_manual_rotations, one target": (
            "SELECT started_at, actor, reason, status FROM audit_manual_rotations "
            "WHERE target = :t ORDER BY started_at DESC", lambda t: {"t": t}),
    }


def timed(runs: int, targets: int, pick: random.Random,
          read: Callable[[str], object]) -> tuple[float, float]:
    """p50 and p95 of ``read`` over ``runs`` targets picked at random, in ms."""
    took = []
    for _ in range(runs):
        target = f"t{pick.randrange(targets)}"
        start = time.perf_counter()
        read(target)
        took.append((time.perf_counter() - start) * 1000)
    if len(took) == 1:
        return took[0], took[0]
    cuts = statistics.quantiles(took, n=20, method="inclusive")
    return statistics.median(took), cuts[18]


def statements(engine: Engine, read: Callable[[], object]) -> list[tuple[str, Any]]:
    """The SQL statements ``read()`` sends, with their parameters."""
    sent: list[tuple[str, Any]] = []

    def catch(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
              executemany: bool) -> None:
        sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", catch)
    try:
        read()
    finally:
        event.remove(engine, "before_cursor_execute", catch)
    return sent


def plans(engine: Engine, sent: list[tuple[str, Any]]) -> Iterator[str]:
    with engine.connect() as conn:
        for statement, parameters in sent:
            yield "  " + " ".join(statement.split())
            for (line,) in conn.exec_driver_sql(
                    f"EXPLAIN (ANALYZE, BUFFERS) {statement}", parameters):
                yield "    " + line


def sizes(engine: Engine) -> list[tuple[str, int, int]]:
    with engine.connect() as conn:
        return [(table, *conn.execute(text(
            "SELECT pg_total_relation_size(CAST(:t AS regclass)), "
            "pg_indexes_size(CAST(:t AS regclass))"), {"t": table}).one())
            for table in ("rotations", "rotation_events")]


def mib(size: int) -> str:
    return f"{size / 2**20:9.1f} MiB"


def report(engine: Engine, filled: Filled, targets: int, runs: int, seed: int) -> None:
    repo, pick = SqlRepository(engine), random.Random(seed + 1)
    print(f"filled {filled.events} events, {filled.rotations} rotations, {targets} targets "
          f"in {filled.seconds:.1f} s")
    print(f"{'read':40} {'p50 ms':>9} {'p95 ms':>9}   ({runs} runs, random targets)")
    reads: dict[str, Callable[[str], object]] = {
        "history (audit show TARGET)": repo.events,
        "status of one target (status)": lambda t: status(repo, [t]),
    }
    with engine.connect() as conn:
        for name, (sql, params) in view_reads(datetime.now(UTC)).items():
            reads[name] = lambda t, s=sql, p=params: conn.execute(text(s), p(t)).all()
        for name, read in reads.items():
            p50, p95 = timed(runs, targets, pick, read)
            print(f"{name:40} {p50:9.2f} {p95:9.2f}")
    total = 0
    for table, size, indexes in sizes(engine):
        total += size
        print(f"size {table:35} {mib(size)} (indexes {mib(indexes).strip()})")
    print(f"bytes per rotation (both tables, with indexes) {total / filled.rotations:.0f}")
    seq_scans = []
    lifetimes, lifetimes_params = view_reads(datetime.now(UTC))["audit_key_lifetimes, one target"]

    def lifetimes_of_t0() -> None:
        with engine.connect() as conn:
            conn.execute(text(lifetimes), lifetimes_params("t0")).all()

    for name, plan_of in (("history", lambda: repo.events("t0")),
                         ("status", lambda: status(repo, ["t0"])),
                         ("audit_key_lifetimes", lifetimes_of_t0)):
        print(f"plan of {name} (target t0):")
        for line in plans(engine, statements(engine, plan_of)):
            print(line)
            if "Seq Scan on " in line:
                seq_scans.append(f"{name}: {line.split('Seq Scan on ', 1)[1].split()[0]}")
    print(f"seq scans: {', '.join(seq_scans) if seq_scans else 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.events < 1 or args.targets < 1 or args.runs < 1:
        parser.error("--events, --targets and --runs must be at least 1")
    with tempfile.TemporaryDirectory() as tmp, harness.database("postgresql",
                                                                Path(tmp)) as url:
        engine = make_engine(url)
        try:
            filled = fill(engine, args.events, args.targets, args.seed)
            report(engine, filled, args.targets, args.runs, args.seed)
        finally:
            engine.dispose()


if __name__ == "__main__":
    main()
