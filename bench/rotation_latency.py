"""How long one rotation takes (grace 0) against the emulator and a real OpenBao, with the
state on SQLite and on PostgreSQL, measured side by side in one run.

    python bench/rotation_latency.py [--rounds N]

Prints per-backend medians and the PostgreSQL/SQLite ratio. Needs the dev extra (bao) and,
for the PostgreSQL column, the server on 127.0.0.1:5432 (database ``test``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import harness
import hvac
from sqlalchemy import create_engine, text

from rotator.adapters.sql.schema import upgrade
from rotator.app.operations import rotate_targets
from rotator.app.runtime import build_runtime
from rotator.config.model import load_config
from rotator.devtools.devvault import DevVault, free_port
from rotator.emulator import Emulator, EmulatorSettings
from rotator.logs import configure_logging

PG = harness.PG
SCHEMA = f"bench_{uuid.uuid4().hex[:8]}"


def pg_schema(sql: str) -> None:
    admin = create_engine(PG)
    with admin.begin() as conn:
        conn.execute(text(sql))
    admin.dispose()


def postgres_url() -> str:
    pg_schema(f'CREATE SCHEMA "{SCHEMA}"')
    return f"{PG}?options=-csearch_path%3D{SCHEMA}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    configure_logging("console", "warning")
    try:
        run(args.rounds)
    finally:
        pg_schema(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')


def run(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, Emulator(EmulatorSettings()) as emu, \
            DevVault() as vault:
        admin = emu.seed_account("admin", role="admin")
        os.environ["BENCH_VAULT_TOKEN"] = vault.root_token
        os.environ["BENCH_COUNT_KEY"] = admin.secret
        runtimes = {}
        for backend, url in (("sqlite", f"sqlite:///{tmp}/bench.db"),
                             ("postgresql", postgres_url())):
            account = emu.seed_account(f"bench-{backend}")
            client = hvac.Client(url=vault.url, token=vault.root_token)
            client.secrets.kv.v2.create_or_update_secret(
                path=f"bench/{backend}", secret={"api_key": account.secret},
                mount_point="secret")
            client.adapter.close()
            path = Path(tmp) / f"{backend}.toml"
            # A daemon section that nothing reads: the runtime is built, no daemon run.
            path.write_text(harness.CONFIG.format(
                db=url, port=free_port(), daemon="", vault=vault.url, count=emu.url,
                targets=harness.TARGET.format(name=backend, sa=account.account_id)))
            upgrade(url)
            runtimes[backend] = build_runtime(load_config(path))
        timings: dict[str, list[float]] = {b: [] for b in runtimes}
        for _ in range(rounds):            # interleaved, so noise hits both alike
            for backend, rt in runtimes.items():
                started = time.perf_counter()
                [result] = rotate_targets(rt, [backend], grace=None, actor="bench")
                timings[backend].append(time.perf_counter() - started)
                assert result.ok, result
        for rt in runtimes.values():
            rt.close()
    print(f"one full rotation (grace 0), {rounds} rounds, interleaved:")
    for backend, values in timings.items():
        print(f"  {backend:<10} median {statistics.median(values) * 1000:7.1f} ms"
              f"   p90 {sorted(values)[int(len(values) * 0.9) - 1] * 1000:7.1f} ms")
    ratio = statistics.median(timings["postgresql"]) / statistics.median(timings["sqlite"])
    print(f"  postgresql / sqlite median ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
