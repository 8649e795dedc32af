"""How close rotator comes to the floor the design sets: rotations per second at a given
concurrency, against a bare script making the same minimal calls, in one run.

    python bench/throughput.py [--targets N] [--concurrency C] [--db sqlite|postgresql]
                               [--plot FILE.png --levels 1,4,16,64]

N targets (grace 0, the emulator without faults, OpenBao dev) are rotated twice over,
interleaved so that noise hits both alike:

- the floor: a bare httpx script, C threads, the design's minimal calls per rotation and
  no persistence: Vault read, probe of the current key, list keys, create, probe of the
  new key, check-and-set write, read-back, delete (5 provider and 3 Vault calls);
- the floor with rotator's calls: the same script making every call rotator makes (the
  two probes and four Vault calls above the minimum, each kept for a reason that
  docs/benchmarks.md gives), still with nothing persisted: rotator against it is the cost
  of persistence alone (SQL, leases, the audit trail);
- rotator: ``rotate_targets`` (what ``rotator rotate --all --concurrency C`` and the
  daemon's workers run: the same runner, leases, intents and outcomes in SQL), in this
  process, so that SQLAlchemy's events count its SQL statements and transactions.

Printed: rotations/s of the floor and rotator and their ratio, then those of the floor with
rotator's calls and rotator's ratio to it, provider and Vault calls per rotation (the
emulator's request count; OpenBao's file audit device), SQL statements and transactions
per rotation. ``--plot`` draws rotations/s against concurrency for both (matplotlib).
Needs the dev extra (bao) and, for ``--db postgresql``, the server on 127.0.0.1:5432.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import harness
import httpx
import hvac
from sqlalchemy import event

from rotator.app.batch import rotate_targets
from rotator.app.runtime import build_runtime
from rotator.config.model import load_config
from rotator.devtools.devvault import DevVault, free_port
from rotator.emulator import Emulator, EmulatorSettings
from rotator.logs import configure_logging

_T = TypeVar("_T")


@dataclass(frozen=True)
class Run:
    rate: float             # rotations per second
    provider_calls: float   # per rotation
    vault_calls: float
    statements: float = 0.0
    transactions: float = 0.0


def floor(emulator: Emulator, vault_url: str, token: str, admin: str,
          accounts: list[tuple[str, str]], concurrency: int, *, as_rotator: bool = False,
          ) -> float:
    """Rotations per second of the minimal calls, C at a time, nothing persisted.

    ``as_rotator``: every call rotator makes, in its order, the minimal ones included: the
    read of the version the write replaces, the custom-metadata write, the probe of the
    key Vault serves before the delete and the revoke's re-read of the current version,
    the read of the old version and the probe of the deleted key.
    """
    headers = {"X-Vault-Token": token}

    def rotate(item: tuple[str, str]) -> None:
        name, account = item
        with httpx.Client(base_url=emulator.url) as count, \
                httpx.Client(base_url=vault_url, headers=headers) as kv:
            path = f"/v1/secret/data/floor/{name}"
            current = kv.get(path).raise_for_status().json()["data"]
            old_key = current["data"]["api_key"]
            me = count.get("/v1/whoami", headers=_bearer(old_key)).raise_for_status().json()
            old_id = me["result"]["key_id"]
            keys = f"/v1/service-accounts/{account}/api-keys"
            count.get(keys, headers=_bearer(admin)).raise_for_status()
            new = count.post(keys, json={"name": f"floor-{time.monotonic_ns()}"},
                             headers=_bearer(admin)).raise_for_status().json()["result"]
            count.get("/v1/whoami", headers=_bearer(new["api_key"])).raise_for_status()
            if as_rotator:
                kv.get(path).raise_for_status()
            kv.post(path, json={"options": {"cas": current["metadata"]["version"]},
                                "data": {"api_key": new["api_key"]}}).raise_for_status()
            if as_rotator:
                kv.post(path.replace("/data/", "/metadata/", 1), json={"custom_metadata": {
                    "key_id": new["key_id"]}}).raise_for_status()
            kv.get(path).raise_for_status()
            if as_rotator:
                kv.get(path).raise_for_status()
                count.get("/v1/whoami", headers=_bearer(new["api_key"])).raise_for_status()
            count.delete(f"{keys}/{old_id}", headers=_bearer(admin)).raise_for_status()
            if as_rotator:
                kv.get(path, params={"version": current["metadata"]["version"]}
                       ).raise_for_status()
                if count.get("/v1/whoami", headers=_bearer(old_key)).status_code != 401:
                    raise AssertionError("the deleted key still authenticates")

    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(rotate, accounts))
    return len(accounts) / (time.monotonic() - started)


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def rotator_rate(config: Path, names: list[str], concurrency: int) -> tuple[float, int, int]:
    """Rotations per second through rotate_targets; SQL statements and transactions."""
    rt = build_runtime(load_config(config))
    counts = {"statements": 0, "transactions": 0}
    lock = threading.Lock()

    def counter(key: str) -> Callable[..., None]:
        def count(*_args: object, **_kwargs: object) -> None:
            with lock:
                counts[key] += 1
        return count

    event.listen(rt.engine, "before_cursor_execute", counter("statements"))
    event.listen(rt.engine, "commit", counter("transactions"))
    event.listen(rt.engine, "rollback", counter("transactions"))
    try:
        started = time.monotonic()
        results = rotate_targets(rt, names, grace=0.0, actor="bench", concurrency=concurrency)
        took = time.monotonic() - started
    finally:
        rt.close()
    assert all(r.ok for r in results), [r for r in results if not r.ok]
    return len(names) / took, counts["statements"], counts["transactions"]


def measure(db_kind: str, targets: int, concurrency: int,
            folder: Path) -> tuple[Run, Run, Run]:
    with Emulator(EmulatorSettings(key_limit=10)) as emulator, DevVault() as vault, \
            harness.database(db_kind, folder) as db:
        admin = emulator.seed_account("admin", role="admin")
        client = hvac.Client(url=vault.url, token=vault.root_token)
        audit = harness.CountingProxy(vault.url)
        floor_accounts: dict[str, list[tuple[str, str]]] = {"floor": [], "floor+": []}
        names, body = [], ""
        for i in range(targets):
            for kind in ("floor", "floor+", "rotator"):
                account = emulator.seed_account(f"{kind}-{i}")
                path = {"floor": f"floor/t{i}", "floor+": f"floor/u{i}"}.get(kind, f"bench/t{i}")
                client.secrets.kv.v2.create_or_update_secret(
                    path=path, secret={"api_key": account.secret})
                if kind == "rotator":
                    names.append(f"t{i}")
                    body += harness.TARGET.format(name=f"t{i}", sa=account.account_id)
                else:
                    floor_accounts[kind].append((path.split("/")[1], account.account_id))
        client.adapter.close()
        config = folder / f"throughput-{db_kind}-{concurrency}.toml"
        config.write_text(harness.CONFIG.format(
            db=db, port=free_port(), daemon=f"workers = {concurrency}", vault=audit.url,
            count=emulator.url, targets=body))
        os.environ.update(harness.bench_env(vault.root_token, admin.secret))
        def counted(run: Callable[[], _T]) -> tuple[_T, float, float]:
            """``run()``, and the provider and Vault calls it made per target."""
            calls, vault_calls = emulator.state.counters().requests, audit.requests
            result = run()
            return (result, (emulator.state.counters().requests - calls) / targets,
                    (audit.requests - vault_calls) / targets)

        try:
            bare = counted(lambda: floor(emulator, audit.url, vault.root_token, admin.secret,
                                         floor_accounts["floor"], concurrency))
            same = counted(lambda: floor(emulator, audit.url, vault.root_token, admin.secret,
                                         floor_accounts["floor+"], concurrency,
                                         as_rotator=True))
            (rate, statements, transactions), calls, vault_calls = counted(
                lambda: rotator_rate(config, names, concurrency))
        finally:
            audit.close()
    return (Run(*bare), Run(*same),
            Run(rate, calls, vault_calls, statements / targets, transactions / targets))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    harness.add_db_option(parser)
    parser.add_argument("--plot", type=Path, help="PNG: rotations/s against concurrency")
    parser.add_argument("--levels", default="1,4,16,64", help="concurrencies for --plot")
    args = parser.parse_args()
    configure_logging("console", "warning")
    levels = [int(v) for v in args.levels.split(",")] if args.plot else [args.concurrency]
    # Per level: the floor, the floor making rotator's calls, rotator.
    rows: list[tuple[int, Run, Run, Run]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for level in levels:
            rows.append((level, *measure(args.db, args.targets, level, Path(tmp))))
    print(f"throughput: {args.targets} targets, {args.db}, grace 0, emulator without faults")
    print(f"{'C':>3} {'floor/s':>8} {'rotator/s':>10} {'ratio':>6} {'provider':>9} "
          f"{'(floor)':>8} {'vault':>6} {'(floor)':>8} {'SQL stmts':>10} {'SQL tx':>7}")
    for level, base, _, ours in rows:
        print(f"{level:>3} {base.rate:>8.1f} {ours.rate:>10.1f} {ours.rate / base.rate:>6.2f} "
              f"{ours.provider_calls:>9.1f} {base.provider_calls:>8.1f} "
              f"{ours.vault_calls:>6.1f} {base.vault_calls:>8.1f} {ours.statements:>10.1f} "
              f"{ours.transactions:>7.1f}")
    print("(provider and Vault calls, SQL statements and transactions: per rotation)")
    print("the floor making rotator's calls, nothing persisted (rotator / it: persistence's "
          "cost alone):")
    print(f"{'C':>3} {'floor+/s':>8} {'rotator/s':>10} {'ratio':>6} {'provider':>9} "
          f"{'vault':>6}")
    for level, _, same, ours in rows:
        print(f"{level:>3} {same.rate:>8.1f} {ours.rate:>10.1f} {ours.rate / same.rate:>6.2f} "
              f"{same.provider_calls:>9.1f} {same.vault_calls:>6.1f}")
    if args.plot:
        plot(rows, args.plot, args.db, args.targets)


def plot(rows: list[tuple[int, Run, Run, Run]], path: Path, db: str, targets: int) -> None:
    try:
        import matplotlib  # noqa: PLC0415 - only --plot needs it (the bench extra)
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install -e '.[bench]'") from None
    matplotlib.use("Agg")
    from matplotlib import pyplot  # noqa: PLC0415

    levels = [level for level, *_ in rows]
    figure, axes = pyplot.subplots(figsize=(6, 4))
    axes.plot(levels, [b.rate for _, b, _, _ in rows], marker="o", label="floor (bare calls)")
    axes.plot(levels, [s.rate for _, _, s, _ in rows], marker="o", linestyle="--",
              label="floor making rotator's calls")
    axes.plot(levels, [o.rate for *_, o in rows], marker="o", label="rotator")
    axes.set_xscale("log", base=2)
    axes.set_xticks(levels, [str(level) for level in levels])
    axes.set_xlabel("concurrency")
    axes.set_ylabel("rotations per second")
    axes.set_title(f"{targets} targets, {db}, grace 0")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
