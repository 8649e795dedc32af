"""What ``rotator run`` costs at rest with many targets, none of them due.

    python bench/idle.py [--targets N] [--small M] [--idle SECONDS] [--poll SECONDS]
                         [--db sqlite|postgresql]

Two daemons side by side, one with N targets (default 10,000) and one with M (default
1,000), each completed a minute before it starts (so the default 30-day schedule has
nothing due), on databases of their own. For each: the time from spawning the process to
``/readyz`` 200, the resident memory after the idle period, the CPU seconds the process
used over it (as % of one core), the sweeps it made, the CPU per sweep, and on PostgreSQL
the SQL transactions per minute (``pg_stat_database`` of a database of its own). Printed
last: the ratio of CPU per sweep, large to small. Goals: ready under 3 s, RSS under
120 MB, CPU under 1% of a core at the default 60 s poll interval, and CPU per sweep that
does not grow with the targets that are not due (a ratio near 1, not near N / M).

``--poll`` shortens the poll interval so that a short run still sees many sweeps (the
%-of-a-core figure is then the cost at that interval, not at the default one).

Needs the dev extra (bao) and, for ``--db postgresql``, the server on 127.0.0.1:5432.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import harness
from sqlalchemy import create_engine, insert, text

from rotator.adapters.sql.schema import make_engine, upgrade
from rotator.adapters.sql.tables import rotations
from rotator.devtools.devvault import DevVault, free_port
from rotator.emulator import Emulator

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


@dataclass(frozen=True)
class Figures:
    targets: int
    ready: float
    rss: float
    cpu: float
    sweeps: float
    transactions: float | None


@contextmanager
def own_database(kind: str, folder: Path) -> Iterator[tuple[str, str | None]]:
    """A migrated database; on PostgreSQL a whole database, so its counters are its own."""
    if kind == "sqlite":
        with harness.database("sqlite", folder) as url:
            yield url, None
        return
    name = f"bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = f"{PG_SERVER}/{name}"
        upgrade(url)
        yield url, name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def completed_a_minute_ago(url: str, count: int) -> None:
    """One completed rotation per target, written in one statement."""
    done = datetime.now(UTC) - timedelta(minutes=1)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(insert(rotations), [
            {"rotation_id": f"rot_bench_{i}", "target": f"t{i}", "service_account": f"sa-{i}",
             "trigger": "schedule", "actor": "bench", "grace_seconds": 0.0,
             "started_at": done, "step": "done", "status": "completed",
             "old_key_id": f"k{i}a", "new_key_id": f"k{i}b", "finished_at": done,
             "updated_at": done}
            for i in range(count)])
    engine.dispose()


def transactions(database: str | None) -> float | None:
    if database is None:
        return None
    engine = create_engine(f"{PG_SERVER}/postgres")
    with engine.connect() as conn:
        value = conn.execute(text(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = :d"),
            {"d": database}).scalar_one()
    engine.dispose()
    return float(value)


def measure(kind: str, count: int, idle: float, poll: float, folder: Path, vault_url: str,
            token: str, count_url: str) -> Figures:
    with own_database(kind, folder) as (url, database):
        completed_a_minute_ago(url, count)
        targets = "".join(harness.TARGET.format(name=f"t{i}", sa=f"sa-{i}")
                          for i in range(count))
        port = free_port()
        config = folder / f"idle-{count}.toml"
        config.write_text(harness.CONFIG.format(
            db=url, port=port, daemon=f'poll_interval = "{poll:g}s"', vault=vault_url,
            count=count_url, targets=targets))
        start = time.monotonic()
        proc: subprocess.Popen[bytes] = harness.start_daemon(
            config, harness.bench_env(token, "unused: nothing is due"))
        try:
            harness.wait_ready(proc, port)
            ready = time.monotonic() - start
            first_sweep_done(port)    # the full one start-up triggers is not idle cost
            # Scraping /metrics (thousands of series) costs the daemon CPU: outside the window.
            sweeps0 = sweeps(port)
            cpu0, tx0 = harness.cpu_seconds(proc.pid), transactions(database)
            time.sleep(idle)
            cpu = harness.cpu_seconds(proc.pid) - cpu0
            tx1 = transactions(database)
            made = sweeps(port) - sweeps0
            rss = harness.rss_mib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(60)
    per_minute = None if tx0 is None or tx1 is None else (tx1 - tx0) / idle * 60
    return Figures(count, ready, rss, cpu, made, per_minute)


def first_sweep_done(port: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while sweeps(port) < 1:
        if time.monotonic() > deadline:
            raise SystemExit(f"no sweep finished within {timeout:g} s")
        time.sleep(0.2)


def sweeps(port: int) -> float:
    return harness.metrics(port).get("rotator_sweep_duration_seconds_count", 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--idle", type=float, default=300.0)
    parser.add_argument("--poll", type=float, default=60.0)
    harness.add_db_option(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Emulator() as emulator, DevVault() as vault:
        rows = [measure(args.db, n, args.idle, args.poll, Path(tmp), vault.url,
                        vault.root_token, emulator.url) for n in (args.small, args.targets)]
    print(f"idle: {args.db}, none due, {args.idle:g} s idle, poll every {args.poll:g} s")
    print(f"{'targets':>8} {'ready s':>8} {'RSS MiB':>8} {'CPU %':>7} {'sweeps':>7} "
          f"{'CPU ms/sweep':>13} {'SQL tx/min':>11}")
    for row in rows:
        per_sweep = row.cpu / row.sweeps * 1000 if row.sweeps else float("nan")
        tx = "-" if row.transactions is None else f"{row.transactions:.0f}"
        print(f"{row.targets:>8} {row.ready:>8.2f} {row.rss:>8.1f} "
              f"{row.cpu / args.idle * 100:>7.2f} {row.sweeps:>7.0f} {per_sweep:>13.1f} "
              f"{tx:>11}")
    small, large = rows
    head = f"CPU per sweep, {large.targets} / {small.targets} targets:"
    if small.sweeps and large.sweeps and small.cpu:
        ratio = (large.cpu / large.sweeps) / (small.cpu / small.sweeps)
        print(f"{head} {ratio:.2f} (targets ratio {large.targets / small.targets:.0f})")
    else:
        print(f"{head} - (too little CPU to tell apart from 0: idle longer)")


if __name__ == "__main__":
    main()
