"""APScheduler, used for one thing only: waking the daemon up.

A poll job fires every ``poll_interval`` (so new config, other replicas' work and clock
changes are picked up), and one date job fires at the next deadline a sweep reported (a
schedule coming due, a grace window ending). What is due is decided by the sweep from SQL,
never by APScheduler's job store, which stays in memory and holds nothing worth keeping.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from rotator.adapters.clock import SYSTEM_CLOCK

__all__ = ["Waker", "quiet_scheduler_logs"]

log = structlog.get_logger("rotator.scheduler")


def quiet_scheduler_logs() -> None:
    """Called once at daemon start-up (a process-wide setting, so never at import)."""
    # APScheduler logs every job run at INFO: noise in a daemon that wakes every minute.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


class Waker:
    """Calls ``tick`` on APScheduler's thread; ``now`` is the daemon's clock (timezone-aware
    UTC), the one the deadlines ``tick`` returns are computed on."""

    def __init__(self, tick: Callable[[], datetime | None], poll_interval: float,
                 now: Callable[[], datetime] = SYSTEM_CLOCK.now) -> None:
        self._tick = tick
        self._poll_interval = poll_interval
        self._now = now
        self._lock = threading.Lock()
        self._next: datetime | None = None
        self.last_tick = time.monotonic()
        self._scheduler = BackgroundScheduler(
            timezone=UTC,
            # One thread: sweeps never overlap; rotations run on the daemon's own workers.
            executors={"default": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )

    def start(self) -> None:
        self._scheduler.add_job(self._run, IntervalTrigger(seconds=self._poll_interval),
                                id="poll", next_run_time=self._now())
        self._scheduler.start()

    def wake_at(self, when: datetime) -> None:
        """Sweep at ``when`` (or now, if it has passed); an earlier pending wake-up wins."""
        with self._lock:
            now = self._now()
            if self._next is not None and now <= self._next <= when:
                return
            self._next = max(when, now)
            if self._scheduler.running:
                # A few milliseconds late, so a deadline has surely passed when we look.
                self._scheduler.add_job(self._run, DateTrigger(self._next + timedelta(
                    milliseconds=20)), id="wake", replace_existing=True)

    def wake_now(self) -> None:
        self.wake_at(self._now())

    def stalled(self, limit: float) -> bool:
        """No sweep has finished for ``limit`` seconds: the loop is stuck."""
        return time.monotonic() - self.last_tick > limit

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def _run(self) -> None:
        with self._lock:
            if self._next is not None and self._next <= self._now():
                self._next = None
        try:
            upcoming = self._tick()
        finally:
            self.last_tick = time.monotonic()
        if upcoming is not None:
            self.wake_at(upcoming)
