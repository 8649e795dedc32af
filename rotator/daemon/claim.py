"""The one-replica claim of a SQLite database, taken at start-up.

The claim is the lease row ``DAEMON_LEASE``, which the daemon's heartbeat renews every
``lease_ttl / 3`` to ``lease_ttl`` ahead. A claim with more than a third of ``lease_ttl``
left was renewed within two heartbeat intervals (one, plus one of margin for a late beat):
its daemon is alive, and a second one is refused at once (``LeaseHeld``, exit 3). A claim
that has stopped being renewed (its daemon froze), or whose holder is a process of this
host that is gone (it died), is waited for until it lapses, with one log line saying how
long, and then taken; if it is renewed meanwhile, its daemon was alive after all: refused.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Protocol

import structlog

from rotator.app.batch import holder_is_gone, holder_process
from rotator.core.errors import LeaseHeld
from rotator.core.ports import Clock, Lease

__all__ = ["DAEMON_LEASE", "take_sqlite_claim"]

log = structlog.get_logger("rotator.daemon")

# The lease row that makes a SQLite database single-replica. Target names cannot start
# with "@" (the config refuses them), so it never collides with a target's lease.
DAEMON_LEASE = "@daemon"
# The main thread wakes at least this often while it waits: the kernel may hand SIGTERM to
# any thread, and Python runs the handler only once the main thread wakes.
_WAKE_SECONDS = 1.0


class Leases(Protocol):
    def acquire_lease(self, target: str, holder: str, ttl_seconds: float,
                      now: datetime) -> Lease | None: ...

    def lease_of(self, target: str) -> tuple[str, datetime] | None: ...


def take_sqlite_claim(repo: Leases, clock: Clock, holder: str, ttl: float,
                      stop: threading.Event) -> bool:
    """Take the claim for ``holder``; ``False`` if ``stop`` was set while waiting for it.

    ``LeaseHeld`` if another daemon's claim is live, or was renewed while this waited.
    """
    waited_for: tuple[str, datetime] | None = None
    while not repo.acquire_lease(DAEMON_LEASE, holder, ttl, clock.now()):
        held = repo.lease_of(DAEMON_LEASE)
        if held is None:
            continue            # released between the two reads: ask again
        other, until = held
        left = (until - clock.now()).total_seconds()
        if waited_for is None:
            gone = holder_is_gone(other)
            if not gone and left > ttl / 3:
                raise LeaseHeld(_refusal(other, "is using this SQLite database ([database] "
                                         "url): its claim was renewed within the last "
                                         f"{ttl * 2 / 3:g}s"))
            log.warning("waiting_for_stale_sqlite_claim", holder=other,
                        why="its process is gone" if gone else "it is no longer renewed",
                        wait_seconds=round(max(left, 0.0), 1),
                        lapses_at=until.isoformat(timespec="seconds"))
        elif held != waited_for:
            raise LeaseHeld(_refusal(other, "renewed its claim on this SQLite database "
                                     "([database] url) while this one waited for it to "
                                     "lapse"))
        waited_for = held
        if not _sleep(stop, max(left, 0.0) + 0.05):
            return False
    return True


def _refusal(holder: str, what: str) -> str:
    process = holder_process(holder)
    who = f"pid {process[1]} on host {process[0]}, holder {holder}" if process else holder
    return (f"another rotator daemon ({who}) {what}; SQLite supports one replica: stop "
            "that daemon first, or run several replicas on PostgreSQL")


def _sleep(stop: threading.Event, seconds: float) -> bool:
    """Sleep ``seconds``, waking each second; ``False`` if ``stop`` was set meanwhile."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if stop.wait(min(left, _WAKE_SECONDS)):
            return False
    return not stop.is_set()
