"""``rotator emulator`` (and ``python -m rotator.emulator``): run the Count emulator.

Parses the options, starts the server, prints its URL, the seeded accounts with their
key ids and secrets (a fake provider's seeded secrets are meant to be seen) and the
control token of ``/_emulator/`` (``$ROTATOR_EMULATOR_TOKEN`` if set, else a random one),
then serves until SIGINT or SIGTERM and exits 0. Bad option values exit 2 with a
message naming the option, and so does a ``--host`` that is not loopback without
``--allow-remote``. ``add_arguments`` and ``run`` let the main ``rotator``
CLI mount this as a subcommand.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TextIO

from rotator.emulator.control import TOKEN_HEADER
from rotator.emulator.faults import EmulatorSettings
from rotator.emulator.server import Emulator, NotLoopback, SeededAccount

__all__ = ["DEFAULT_ACCOUNTS", "TOKEN_ENV", "add_arguments", "main", "run"]

# The control token to use instead of a random one (compose shares it with its seeder).
TOKEN_ENV = "ROTATOR_EMULATOR_TOKEN"  # noqa: S105 (a variable name, not a token)

DEFAULT_PORT = 8099
DEFAULT_ACCOUNTS: tuple[tuple[str, str], ...] = (
    ("admin", "admin"), ("billing-export", "member"), ("ci-deployer", "member"))
_ROLES = ("admin", "member")


def _number(kind: Callable[[str], float], low: float, high: float | None = None,
            low_open: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        too_low = value <= low if low_open else value < low
        if too_low or (high is not None and value > high) or not math.isfinite(value):
            bound = f"between {low:g} and {high:g}" if high is not None else (
                f"greater than {low:g}" if low_open else f"at least {low:g}")
            raise argparse.ArgumentTypeError(f"must be {bound}, not {text}")
        return value
    return parse


def _account(text: str) -> tuple[str, str]:
    name, _, role = text.partition(":")
    role = role or "member"
    if not name or len(name) > 100:
        raise argparse.ArgumentTypeError(f"account name must be 1 to 100 characters: {text!r}")
    if role not in _ROLES:
        raise argparse.ArgumentTypeError(f"role must be admin or member, not {role!r}")
    return name, role


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The emulator's options, for ``rotator emulator`` or a standalone parser."""
    d = EmulatorSettings()
    count, seconds = _number(int, 0), _number(float, 0)
    rate = _number(float, 0, 1)
    add = parser.add_argument
    add("--host", default="127.0.0.1",
        help="address to bind; loopback only, unless --allow-remote (default: %(default)s)")
    add("--allow-remote", action="store_true",
        help="allow a --host that is not loopback: anyone who reaches it can use the API")
    add("--port", type=_number(int, 0, 65535), default=DEFAULT_PORT,
        help="port to bind; 0 picks a free one (default: %(default)s)")
    add("--key-limit", type=count, default=d.key_limit,
        help="keys a service account may hold (default: %(default)s)")
    add("--latency", type=seconds, default=d.latency,
        help="seconds added to every API request (default: %(default)s)")
    add("--error-rate", type=rate, default=d.error_rate,
        help="fraction of API requests answered 5xx (default: %(default)s)")
    add("--rate-429", type=rate, default=d.rate_429,
        help="fraction of API requests answered 429 at random (default: %(default)s)")
    add("--rate-limit", type=count, default=d.rate_limit,
        help="requests per window per API key; 0 = unlimited (default: %(default)s)")
    add("--rate-window", type=_number(float, 0, low_open=True), default=d.rate_window,
        help="length of the rate-limit window in seconds (default: %(default)s)")
    add("--reset-format", choices=("delta", "epoch", "http-date"), default=d.reset_format,
        help="format of Retry-After and RateLimit-Reset (default: %(default)s)")
    add("--propagation-delay", type=seconds, default=d.propagation_delay,
        help="seconds before a new key authenticates (default: %(default)s)")
    add("--revoke-delay", type=seconds, default=d.revoke_delay,
        help="seconds a deleted key goes on authenticating; a large value is a provider "
             "that does not revoke (default: %(default)s)")
    add("--layout", choices=("count", "alt"), default=d.layout,
        help="the wire layout: Count's, or 'alt', the same API under other paths, fields, "
             "envelope and auth header, for a type = \"http\" provider (docs/emulator.md; "
             "default: %(default)s)")
    add("--seed", type=int, default=d.seed,
        help="seed of the fault RNG and of account ids, key ids and secrets: the same seed "
             "seeds the same accounts with the same keys at every start")
    add("--account", type=_account, action="append", metavar="NAME[:ROLE]",
        help="seed a service account with one key (repeatable; role admin or member; "
             "default: admin:admin, billing-export, ci-deployer)")


def run(args: argparse.Namespace, *, stop: threading.Event | None = None,
        out: TextIO | None = None) -> int:
    """Start the emulator from parsed options and serve until a signal (or ``stop``)."""
    out = out or sys.stdout
    try:
        settings = EmulatorSettings(
            key_limit=args.key_limit, latency=float(args.latency),
            error_rate=float(args.error_rate), rate_429=float(args.rate_429),
            rate_limit=args.rate_limit, rate_window=float(args.rate_window),
            reset_format=args.reset_format, propagation_delay=float(args.propagation_delay),
            revoke_delay=float(args.revoke_delay), seed=args.seed, layout=args.layout)
    except ValueError as exc:
        option = "--" + str(exc).split(" ", 1)[0].replace("_", "-")
        print(f"rotator emulator: error: {option}: {exc}", file=sys.stderr)
        return 2
    try:
        emulator = Emulator(settings, host=args.host, port=args.port,
                            control_token=os.environ.get(TOKEN_ENV, "").strip() or None,
                            allow_remote=args.allow_remote, identity_seed=args.seed)
    except NotLoopback as exc:
        print(f"rotator emulator: error: --host: {exc} (--allow-remote)", file=sys.stderr)
        return 2
    try:
        emulator.start()
    except OSError as exc:
        print(f"rotator emulator: error: cannot listen on {args.host}:{args.port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 1
    stop = stop or threading.Event()
    try:
        # Handlers go in before the URL is printed: whoever reads it may signal at once.
        with _stop_on_signals(stop):
            seeded = [emulator.seed_account(name, role)
                      for name, role in (args.account or DEFAULT_ACCOUNTS)]
            _announce(emulator, seeded, out)
            while not stop.wait(0.2):
                pass
    finally:
        emulator.stop()
    print("Count emulator stopped.", file=out, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rotator emulator",
        description="Run the Count emulator: a fake Count API with fault knobs.")
    add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad options, 0 on --help
        return exc.code if isinstance(exc.code, int) else 2
    return run(args)


def _announce(emulator: Emulator, seeded: list[SeededAccount], out: TextIO) -> None:
    s = emulator.settings
    print(f"Count emulator listening on {emulator.url}", file=out)
    print(f"  key limit {s.key_limit}, latency {s.latency:g}s, error rate {s.error_rate:g}, "
          f"429 rate {s.rate_429:g}, rate limit {s.rate_limit or 'none'} per "
          f"{s.rate_window:g}s ({s.reset_format}), propagation {s.propagation_delay:g}s, "
          f"revoke delay {s.revoke_delay:g}s, seed {s.seed}, layout {s.layout}", file=out)
    rows = [("ACCOUNT", "ROLE", "ACCOUNT ID", "KEY ID", "API KEY")]
    rows += [(a.name, a.role, a.account_id, a.key_id, a.secret) for a in seeded]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  " + "  ".join([*cells, row[4]]), file=out)
    print(f"Control: {emulator.url}/_emulator/state with header {TOKEN_HEADER}: "
          f"{emulator.control_token}", file=out)
    print("Stop with Ctrl-C or SIGTERM.", file=out, flush=True)


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` on SIGINT and SIGTERM (main thread only: where signals arrive)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # the caller sets ``stop``
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
