"""An emergency rotation of every target under Count's rate limit: is the limit, and not
rotator, what sets the pace?

    python bench/ratelimit.py [--targets N] [--workers W] [--limit L] [--window S]
                              [--db sqlite|postgresql]

The emulator limits each API key to L requests per S-second window (default 60 per 10 s).
In admin mode every list, create and delete of every target goes out under the one
management key, so that key's window paces the whole batch; each probe (whoami) goes out
under the key it probes, with a window of its own. ``rotator run`` starts with N targets
all due (grace 0, W workers, the default retry policy) and the program waits until every
rotation has ended.

Printed: the management key's requests and the ideal time they need at the limit
(requests / L * S, the first window free), the time the batch took and the ratio, the 429s
the emulator answered (in all, and per window), and how the rotations ended. Goal: a
ratio within 1.15, at most one 429 per window, no rotation rolled back.

Needs the dev extra (bao) and, for ``--db postgresql``, the server on 127.0.0.1:5432
(database ``test``).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import harness
import hvac

from rotator.devtools.devvault import DevVault, free_port
from rotator.emulator import Emulator, EmulatorSettings

ADMIN_CALLS = ("list_keys", "create_key", "delete_key")


def ended(sample: dict[str, float]) -> float:
    return sum(sample.get(f"rotator_rotations_{what}_total", 0.0)
               for what in ("completed", "failed", "rolled_back"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=200)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--limit", type=int, default=60, help="requests per window per key")
    parser.add_argument("--window", type=float, default=10.0, help="seconds")
    harness.add_db_option(parser)
    args = parser.parse_args()
    settings = EmulatorSettings(rate_limit=args.limit, rate_window=args.window)
    with tempfile.TemporaryDirectory() as tmp, Emulator(settings) as emulator, \
            DevVault() as vault, harness.database(args.db, Path(tmp)) as db:
        admin_key = emulator.seed_account("admin", role="admin")
        client = hvac.Client(url=vault.url, token=vault.root_token)
        targets = ""
        for i in range(args.targets):
            account = emulator.seed_account(f"bench-{i}")
            client.secrets.kv.v2.create_or_update_secret(
                path=f"bench/t{i}", secret={"api_key": account.secret})
            targets += harness.TARGET.format(name=f"t{i}", sa=account.account_id)
        client.adapter.close()
        port = free_port()
        config = Path(tmp) / "bench.toml"
        config.write_text(harness.CONFIG.format(
            db=db, port=port, daemon=f"workers = {args.workers}", vault=vault.url,
            count=emulator.url, targets=targets))
        proc = harness.start_daemon(config, harness.bench_env(vault.root_token,
                                                              admin_key.secret))
        try:
            harness.wait_ready(proc, port)
            began = time.monotonic()
            while ended(sample := harness.metrics(port)) < args.targets:
                if proc.poll() is not None:
                    sys.exit(f"rotator run exited {proc.returncode} mid-batch")
                time.sleep(0.2)
            took = time.monotonic() - began
        finally:
            proc.terminate()
            proc.wait(60)
        limited = emulator.state.counters().faults.get("rate_limited", 0)
    admin_requests = sum(sample.get(f"rotator_provider_calls_total:{c}", 0.0)
                         for c in ADMIN_CALLS)
    # The first window's requests go at once; each later one waits a window more.
    ideal = max(0.0, math.ceil(admin_requests / args.limit) - 1) * args.window
    windows = max(1, math.ceil(took / args.window))
    completed = sample.get("rotator_rotations_completed_total", 0.0)
    rolled_back = sample.get("rotator_rotations_rolled_back_total", 0.0)
    failed = sample.get("rotator_rotations_failed_total", 0.0)
    print(f"ratelimit: {args.targets} targets, {args.workers} workers, {args.db}, "
          f"{args.limit} requests per {args.window:g} s per key, admin mode")
    print(f"management key requests   {admin_requests:.0f} "
          f"({admin_requests / args.targets:.1f} per rotation)")
    print(f"ideal time at the limit   {ideal:.1f} s")
    print(f"batch took                {took:.1f} s")
    print(f"ratio took/ideal          {took / ideal:.3f}" if ideal else
          "ratio took/ideal          - (all within the first window)")
    print(f"429s                      {limited} ({limited / windows:.2f} per window, "
          f"{windows} windows)")
    print(f"rotations                 completed {completed:.0f}, rolled back "
          f"{rolled_back:.0f}, failed {failed:.0f}")


if __name__ == "__main__":
    main()
