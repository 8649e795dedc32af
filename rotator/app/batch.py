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
from collections.abc import Callable, Collection
from concurrent import futures
from dataclasses import dataclass, replace
from datetime import datetime

import structlog

from rotator.app.runtime import Runtime
from rotator.core.errors import LeaseLost, RotatorError
from rotator.core.model import Rotation, Step
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
    outcome: str                 # completed, rolled_back, failed, in_progress, error
    rotation_id: str | None
    detail: str | None
    resumed: bool = False
    elapsed: float = 0.0         # seconds from its start to its result, grace included

    @property
    def ok(self) -> bool:
        return self.outcome == "completed"


# What one turn on a thread gave: the result so far, and the grace deadline to wait for.
_Turn = tuple[TargetResult, datetime | None]


def rotate_targets(rt: Runtime, names: list[str], *, grace: float | None, actor: str,
                   trigger: str = "manual", wait: bool = True, lease_wait: float = 0.0,
                   reason: str | None = None, concurrency: int = 1,
                   on_result: Callable[[TargetResult], None] = lambda _result: None,
                   ) -> list[TargetResult]:
    """Rotate each target; ``reason`` (why an operator asked) is kept with each rotation
    this starts. An interrupt (Ctrl-C) starts nothing more, parks the running rotations
    at their next step boundary, and is raised again."""
    specs = {name: rt.spec(name) for name in names}  # unknown names fail before anything runs
    stop = threading.Event()
    runner = Runner(providers=rt.providers, store=rt.store, repo=rt.repo, clock=rt.clock,
                    holder=holder_id(), lease_ttl=rt.config.defaults.lease_ttl,
                    call_deadline=rt.config.call_deadline(),
                    heartbeat=lambda: renew_vault_token(rt), stopping=stop.is_set)
    renew_vault_token(rt)
    began: dict[str, float] = {}

    def turn(name: str, lease: float) -> _Turn:
        began.setdefault(name, time.monotonic())
        try:
            report = runner.rotate(specs[name], trigger=trigger, actor=actor, grace=grace,
                                   wait=False, lease_wait=lease, reason=reason)
        except (RotatorError, LeaseLost) as exc:
            log.error("target_failed", target=name, error=str(exc))
            return TargetResult(name, "error", None, str(exc)), None
        rot = report.rotation
        in_grace = rot.step is Step.GRACE and rot.grace_ends_at is not None and wait
        return _result(rot, report.resumed), rot.grace_ends_at if in_grace else None

    results: dict[str, TargetResult] = {}
    resumed: set[str] = set()
    waiting: dict[str, datetime] = {}
    renewed = time.monotonic()
    with futures.ThreadPoolExecutor(max_workers=concurrency,
                                    thread_name_prefix="rotator-batch") as pool:
        try:
            running = {pool.submit(turn, name, lease_wait): name for name in specs}
            while running or waiting:
                done = _next_done(rt, running, waiting)
                for future in done:
                    name = running.pop(future)
                    result, grace_ends = future.result()
                    if result.resumed:
                        resumed.add(name)
                    if grace_ends is not None:
                        waiting[name] = grace_ends
                        continue
                    results[name] = replace(result, resumed=name in resumed,
                                            elapsed=time.monotonic() - began[name])
                    on_result(results[name])
                now = rt.clock.now()
                for name in [n for n, ends in waiting.items() if ends <= now]:
                    del waiting[name]
                    # The lease of a process killed in this window lapses within lease_ttl.
                    lease = max(lease_wait, rt.config.defaults.lease_ttl)
                    running[pool.submit(turn, name, lease)] = name
                if waiting and time.monotonic() - renewed >= _RENEW_EVERY_SECONDS:
                    renewed = time.monotonic()
                    renew_vault_token(rt)
        except BaseException:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return [results[name] for name in specs]


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


def _result(rot: Rotation, resumed: bool) -> TargetResult:
    outcome = rot.status.value if rot.is_terminal else "in_progress"
    detail = rot.reason if rot.is_terminal else f"at step {rot.step.value}: {rot.reason or ''}"
    return TargetResult(rot.target, outcome, rot.rotation_id, detail, resumed)
