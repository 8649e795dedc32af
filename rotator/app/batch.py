"""``rotate TARGET... | --all``: a batch of rotations, ``concurrency`` at a time.

Each target runs up to its grace window on one of ``concurrency`` threads and gives the
thread back; the grace windows then run side by side (a stored deadline each, waited out
by the calling thread), and when a window ends the rest of that rotation gets a thread
again. A failing target does not stop the others (certbot's habit): each is reported
once, when it finishes (``on_result``), and all of them in the returned list.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from concurrent import futures
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import structlog

from rotator.app.in_flight import lease_held_detail
from rotator.app.next_step import refusal_next_step
from rotator.app.runtime import Runtime
from rotator.app.status import ending_results
from rotator.core.errors import LeaseHeld, LeaseLost, RotatorError
from rotator.core.model import Rotation, Step
from rotator.core.target import TargetSpec
from rotator.core.vocabulary import Trigger
from rotator.engine.runner import Runner

__all__ = ["TargetResult", "holder_id", "holder_is_gone", "holder_process", "renew_vault_token",
           "rotate_targets"]

log = structlog.get_logger("rotator.service")

# The calling thread wakes at least this often (Ctrl-C is seen within one).
_WAKE_SECONDS = 1.0
# A renewal is a Vault round trip: once a minute is plenty for a token running low.
_RENEW_EVERY_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class TargetResult:
    target: str
    # completed, completed_pending_cleanup (the old key's deletion failed, queued),
    # rolled_back, failed, in_progress (not waited for, or parked), lease_held (a live
    # process holds the target), error
    outcome: str
    rotation_id: str | None
    detail: str | None
    # The rotation was in flight already (another shell's, the daemon's, or interrupted):
    # this command joined it instead of starting another.
    joined: bool = False
    elapsed: float = 0.0         # seconds from its start to its result, grace included
    # A refusal that changed nothing: what the operator does about it (``next_step``).
    next_step: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "completed"

    @property
    def rotated(self) -> bool:
        """Vault serves the new key (the old one may still live, queued for cleanup)."""
        return self.outcome in ("completed", "completed_pending_cleanup")


# What one turn on a thread gave: the result so far, and the grace deadline to wait for.
_Turn = tuple[TargetResult, datetime | None]


def _never() -> bool:
    return False


def rotate_targets(rt: Runtime, names: list[str], *, grace: float | None, actor: str,
                   trigger: str = Trigger.MANUAL, wait: bool = True, lease_wait: float = 0.0,
                   reason: str | None = None, concurrency: int = 1,
                   on_result: Callable[[TargetResult], None] = lambda _result: None,
                   on_join: Callable[[Rotation], None] | None = None,
                   on_wait: Callable[[Mapping[str, datetime]], None] | None = None,
                   ) -> list[TargetResult]:
    """Rotate each target, ``concurrency`` at a time; ``reason`` (why an operator asked) is
    kept with each rotation this starts.

    A target with a rotation in flight has that rotation seen to its end (``on_join`` is
    told of it), and never a second one started after it: two shells asking for the same
    rotation get one rotation and one key switch. ``on_wait`` hears, about once a second,
    the grace deadlines being waited out. An interrupt (Ctrl-C) starts nothing more, parks
    the running rotations at their next step boundary, and is raised again.
    """
    specs = {name: rt.spec(name) for name in names}  # unknown names fail before anything runs
    stop = threading.Event()
    runner = Runner(providers=rt.providers, store=rt.store, repo=rt.repo, clock=rt.clock,
                    holder=holder_id(), lease_ttl=rt.config.defaults.lease_ttl,
                    call_deadline=rt.config.call_deadline(),
                    heartbeat=lambda: renew_vault_token(rt), stopping=stop.is_set)
    renew_vault_token(rt)
    turns = _Turns(rt, runner, specs, on_join, wait,
                   {"trigger": trigger, "actor": actor, "grace": grace, "reason": reason})
    results: dict[str, TargetResult] = {}
    waiting: dict[str, datetime] = {}
    after_grace: set[str] = set()
    renewed = time.monotonic()
    # The lease of a process killed in a grace window lapses within lease_ttl.
    lease_after_grace = max(lease_wait, rt.config.defaults.lease_ttl)
    with futures.ThreadPoolExecutor(max_workers=concurrency,
                                    thread_name_prefix="rotator-batch") as pool:
        try:
            running = {pool.submit(turns.turn, name, lease_wait): name for name in specs}
            while running or waiting:
                done = _next_done(rt, running, waiting)
                for future in done:
                    name = running.pop(future)
                    result, grace_ends = future.result()
                    if grace_ends is not None:
                        waiting[name] = grace_ends
                        log.info("grace_waiting", target=name,
                                 rotation_id=result.rotation_id,
                                 until=grace_ends.isoformat(timespec="seconds"))
                        continue
                    if result.outcome == "lease_held" and name in after_grace:
                        # Another shell or replica is finishing the rotation followed:
                        # its result is ours.
                        running[pool.submit(turns.turn, name, lease_after_grace)] = name
                        continue
                    results[name] = replace(result, elapsed=turns.elapsed(name))
                    on_result(results[name])
                now = rt.clock.now()
                for name in [n for n, ends in waiting.items() if ends <= now]:
                    del waiting[name]
                    after_grace.add(name)
                    running[pool.submit(turns.turn, name, lease_after_grace)] = name
                if waiting and on_wait is not None:
                    on_wait(dict(waiting))
                if waiting and time.monotonic() - renewed >= _RENEW_EVERY_SECONDS:
                    renewed = time.monotonic()
                    renew_vault_token(rt)
        except BaseException:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return [results[name] for name in specs]


class _Turns:
    """One target's turn at a time on a pool thread: rotate it, or go on with the rotation
    it had in flight when the batch began (joined), never a second one after it."""

    def __init__(self, rt: Runtime, runner: Runner, specs: dict[str, TargetSpec],
                 on_join: Callable[[Rotation], None] | None, wait: bool,
                 rotate_kwargs: dict[str, Any]) -> None:
        self._rt, self._runner, self._specs, self._on_join = rt, runner, specs, on_join
        self._wait, self._rotate_kwargs = wait, rotate_kwargs
        self._lock = threading.Lock()   # the turns run on the pool's threads
        self._began: dict[str, float] = {}
        # The rotation this command sees to its end, per target: from then on it may only
        # resume it, so whoever finishes it, nothing new starts behind it.
        self._following: dict[str, str] = {
            name: rot.rotation_id for name in specs
            if (rot := rt.repo.running_rotation(name)) is not None}
        self._started: set[str] = set()   # started by this command: its own, not joined
        self._joined: set[str] = set()

    def elapsed(self, name: str) -> float:
        with self._lock:
            return time.monotonic() - self._began[name]

    def turn(self, name: str, lease: float) -> _Turn:
        rt = self._rt
        with self._lock:
            self._began.setdefault(name, time.monotonic())
            followed = self._following.get(name)
        try:
            report = self._runner.rotate_if(
                self._specs[name], None if followed is None else _never,
                wait=False, lease_wait=lease, **self._rotate_kwargs)
        except LeaseHeld as exc:
            return _held(rt, name, followed, exc, joined=name not in self._started), None
        except (RotatorError, LeaseLost) as exc:
            log.error("target_failed", target=name, error=str(exc))
            return TargetResult(name, "error", followed, str(exc)), None
        # None: the rotation followed ended (another process finished it) before the lease.
        rot = report.rotation if report is not None else _stored(rt, followed)
        with self._lock:
            if report is not None and not report.resumed:
                self._started.add(name)
            first_join = name not in self._started and name not in self._joined
            if first_join:
                self._joined.add(name)
            self._following[name] = rot.rotation_id
            joined = name in self._joined
        if first_join and self._on_join is not None:
            self._on_join(rot)
        in_grace = rot.step is Step.GRACE and rot.grace_ends_at is not None and self._wait
        return _result(rt, rot, joined), rot.grace_ends_at if in_grace else None


def _stored(rt: Runtime, rotation_id: str | None) -> Rotation:
    rot = None if rotation_id is None else rt.repo.get_rotation(rotation_id)
    assert rot is not None, "a rotation followed is never deleted"
    return rot


def _held(rt: Runtime, name: str, followed: str | None, exc: LeaseHeld, *,
          joined: bool) -> TargetResult:
    """Another live process holds the target: its result if the rotation ended, else 3."""
    rot = None if followed is None else rt.repo.get_rotation(followed)
    if rot is not None and rot.is_terminal:
        return _result(rt, rot, joined)
    running = rt.repo.running_rotation(name)
    return TargetResult(name, "lease_held", running.rotation_id if running else followed,
                        lease_held_detail(rt.repo, name, exc))


def _next_done(rt: Runtime, running: Collection[futures.Future[_Turn]],
               waiting: dict[str, datetime]) -> set[futures.Future[_Turn]]:
    """The turns that ended within a second, or before the first grace window ends."""
    timeout = _WAKE_SECONDS
    if waiting:
        left = (min(waiting.values()) - rt.clock.now()).total_seconds()
        timeout = min(timeout, max(0.0, left))
    if not running:
        # ``futures.wait`` returns at once on no futures: every window is in grace.
        rt.clock.sleep(timeout)
        return set()
    done, _ = futures.wait(running, timeout=timeout, return_when=futures.FIRST_COMPLETED)
    return done


def holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def holder_process(holder: str) -> tuple[str, int] | None:
    """The host and pid of a ``holder_id``; ``None`` if it does not parse."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    return (host, int(pid)) if host and pid.isdigit() else None


def holder_is_gone(holder: str) -> bool:
    """Whether ``holder`` (another holder's id) was a process of this host that is no more.

    Its pid is not running, or is this very process: an earlier life of a container's
    pid 1. ``False`` for another host's holder, or one whose id does not parse.
    """
    process = holder_process(holder)
    if process is None or process[0] != socket.gethostname():
        return False
    pid = process[1]
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:      # alive, as another user
        return False
    return False


def renew_vault_token(rt: Runtime) -> None:
    """Renew a renewable Vault token that is running low; a failure is logged, not fatal."""
    try:
        rt.store.renew_if_needed()
    except RotatorError as exc:
        log.warning("vault_token_renewal_failed", error=str(exc))


def _result(rt: Runtime, rot: Rotation, joined: bool) -> TargetResult:
    """The rotation's result as its trail ends it (``completed_pending_cleanup``)."""
    if not rot.is_terminal:
        return TargetResult(rot.target, "in_progress", rot.rotation_id,
                            f"at step {rot.step.value}: {rot.reason or ''}", joined)
    outcome = ending_results(rt.repo.events(target=rot.target)).get(
        rot.rotation_id, rot.status.value)
    return TargetResult(rot.target, outcome, rot.rotation_id, rot.reason, joined,
                        next_step=refusal_next_step(rt.config, rot))
