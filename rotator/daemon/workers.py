"""Threads that drive rotations, one target each, and the heartbeat that keeps their leases.

The pool's threads are daemon threads on purpose: when the shutdown deadline passes with a
step still running, the process exits anyway and that target's lease lapses on its own,
exactly as after a crash (which every step is built to survive).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import structlog

from rotator.core.ports import Clock, RotationRepository

__all__ = ["LeaseHeartbeat", "WorkerPool"]

log = structlog.get_logger("rotator.daemon")


class WorkerPool:
    def __init__(self, size: int, on_done: Callable[[], None] = lambda: None) -> None:
        self._size = size
        self._on_done = on_done
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy: dict[str, threading.Thread] = {}

    def busy(self) -> set[str]:
        with self._lock:
            return set(self._busy)

    def submit(self, target: str, job: Callable[[], object]) -> bool:
        """Run ``job`` for ``target`` on a new thread; ``False`` if busy or at capacity."""
        with self._lock:
            if target in self._busy or len(self._busy) >= self._size:
                return False
            thread = threading.Thread(target=self._run, args=(target, job), daemon=True,
                                      name=f"rotator-{target}")
            self._busy[target] = thread
        thread.start()
        return True

    def wait_for_room(self, target: str, timeout: float) -> bool:
        """Wait until ``submit(target, ...)`` would be taken; ``False`` if ``timeout`` passed."""
        with self._lock:
            return self._idle.wait_for(
                lambda: target not in self._busy and len(self._busy) < self._size, timeout)

    def _run(self, target: str, job: Callable[[], object]) -> None:
        try:
            job()
        except Exception:
            # A job reports its own failures; this is the last line against a dead thread.
            log.exception("worker_crashed", target=target)
        finally:
            with self._lock:
                self._busy.pop(target, None)
                self._idle.notify_all()
            self._on_done()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until no job runs; ``False`` if ``timeout`` passed first."""
        with self._lock:
            return self._idle.wait_for(lambda: not self._busy, timeout)


class LeaseHeartbeat:
    """Renews this process's leases every ``ttl / 3`` while their steps run.

    A step may take longer than a lease lives (a slow propagation probe, a provider's
    Retry-After); without a heartbeat another replica could take the target mid-step.
    """

    def __init__(self, repo: RotationRepository, clock: Clock, holder: str, ttl: float,
                 targets: Callable[[], Iterable[str]],
                 on_lost: Callable[[str], None] | None = None) -> None:
        self._repo, self._clock, self._holder, self._ttl = repo, clock, holder, ttl
        self._targets = targets
        # Hears a lease that could not be renewed because it is not ours (any more).
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name="rotator-heartbeat")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def beat(self) -> None:
        for target in sorted(self._targets()):
            try:
                renewed = self._repo.renew_lease(target, self._holder, self._ttl,
                                                 self._clock.now())
            except Exception as exc:
                log.warning("lease_heartbeat_failed", target=target,
                            error=type(exc).__name__)
                continue
            if not renewed and self._on_lost is not None:
                self._on_lost(target)

    def _loop(self) -> None:
        while not self._stop.wait(max(self._ttl / 3, 0.05)):
            self.beat()
