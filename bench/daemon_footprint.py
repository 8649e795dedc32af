"""How long ``rotator run`` takes from process start to ready, and what it costs at rest:
resident memory and CPU while idle, with 1 and with 50 targets, on SQLite and PostgreSQL,
measured side by side in one run.

    python bench/daemon_footprint.py [--rounds N] [--idle SECONDS]

Start-to-ready is the time from spawning the process until ``/readyz`` answers 200 (the
Python start-up and imports included). Idle figures are read from /proc after every
target's first rotation has completed and nothing else is due. Needs the dev extra (bao)
and, for the PostgreSQL column, the server on 127.0.0.1:5432 (database ``test``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import harness
import hvac
from sqlalchemy import create_engine, text

from rotator.adapters.sql.schema import upgrade
from rotator.devtools.devvault import DevVault, free_port
from rotator.emulator import Emulator

PG, TARGET = harness.PG, harness.TARGET
rss_mib, cpu_seconds = harness.rss_mib, harness.cpu_seconds


def completed(port: int) -> float:
    return harness.metrics(port).get("rotator_rotations_completed_total", 0.0)


def one_run(db: str, size: int, targets: str, env: dict[str, str], vault_url: str, count_url: str,
            tmp: Path, idle: float) -> tuple[float, float, float]:
    port = free_port()
    config = tmp / f"bench-{uuid.uuid4().hex[:6]}.toml"
    config.write_text(harness.CONFIG.format(db=db, port=port, daemon='poll_interval = "60s"',
                                            vault=vault_url, count=count_url, targets=targets))
    start = time.monotonic()
    proc: subprocess.Popen[bytes] = harness.start_daemon(config, env)
    try:
        harness.wait_ready(proc, port)
        ready = time.monotonic() - start
        while completed(port) < size:
            time.sleep(0.05)
        time.sleep(1.0)
        cpu0 = cpu_seconds(proc.pid)
        time.sleep(idle)
        cpu = (cpu_seconds(proc.pid) - cpu0) / idle * 100
        return ready, rss_mib(proc.pid), cpu
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=float, default=10.0)
    args = parser.parse_args()
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG)
    with tempfile.TemporaryDirectory() as tmp, Emulator() as emulator, DevVault() as vault:
        admin_key = emulator.seed_account("admin", role="admin")
        client = hvac.Client(url=vault.url, token=vault.root_token)
        env = harness.bench_env(vault.root_token, admin_key.secret)
        rows: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
        try:
            for size in (1, 50):
                for backend in ("sqlite", "postgresql"):
                    rows[(backend, size)] = []
            for round_no in range(args.rounds):
                for size in (1, 50):
                    for backend in ("sqlite", "postgresql"):
                        tag = f"{backend}{size}r{round_no}"
                        targets = ""
                        for i in range(size):
                            account = emulator.seed_account(f"{tag}-{i}")
                            client.secrets.kv.v2.create_or_update_secret(
                                path=f"bench/{tag}-{i}", secret={"api_key": account.secret})
                            targets += TARGET.format(name=f"{tag}-{i}", sa=account.account_id)
                        if backend == "sqlite":
                            db = f"sqlite:///{Path(tmp) / tag}.db"
                        else:
                            with admin.begin() as conn:
                                conn.execute(text(f'CREATE SCHEMA "{schema}{tag}"'))
                            db = f"{PG}?options=-csearch_path%3D{schema}{tag}"
                        upgrade(db)
                        rows[(backend, size)].append(
                            one_run(db, size, targets, env, vault.url, emulator.url, Path(tmp),
                                    args.idle))
        finally:
            with admin.begin() as conn:
                for row in conn.execute(text(
                        "SELECT nspname FROM pg_namespace WHERE nspname LIKE :p"),
                        {"p": f"{schema}%"}).all():
                    conn.execute(text(f'DROP SCHEMA "{row[0]}" CASCADE'))
            admin.dispose()
            client.adapter.close()
    print(f"rotator run: {args.rounds} rounds, idle measured over {args.idle:g}s, medians")
    print(f"{'backend':<11} {'targets':>7} {'start->ready s':>15} {'idle RSS MiB':>13} "
          f"{'idle CPU %':>11}")
    for (backend, size), values in rows.items():
        ready, rss, cpu = (statistics.median(v[i] for v in values) for i in range(3))
        print(f"{backend:<11} {size:>7} {ready:>15.3f} {rss:>13.1f} {cpu:>11.2f}")
    base = statistics.median(v[0] for v in rows[("sqlite", 1)])
    pg = statistics.median(v[0] for v in rows[("postgresql", 1)])
    print(f"start->ready PostgreSQL/SQLite ratio (1 target): {pg / base:.2f}")


if __name__ == "__main__":
    main()
