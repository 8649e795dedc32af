"""The operations both front ends call: rotate a batch, dry run (status: ``status``).

A batch goes on past a failing target and reports every target once at the end
(certbot's habit); the caller turns the summary into an exit code.
"""

from __future__ import annotations

import getpass
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import structlog

from rotator.app.in_flight import describe_in_flight, lease_held_detail
from rotator.app.runtime import Runtime
from rotator.app.status import ending_results
from rotator.core.errors import LeaseHeld, LeaseLost, RotatorError
from rotator.core.model import Rotation, Step, key_name
from rotator.core.ports import RotationReader
from rotator.engine.runner import Runner

__all__ = ["DryRun", "TargetResult", "dry_run", "holder_id", "rotate_targets",
           "whoami_actor"]

log = structlog.get_logger("rotator.service")


def whoami_actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


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

    @property
    def ok(self) -> bool:
        return self.outcome == "completed"

    @property
    def rotated(self) -> bool:
        """Vault serves the new key (the old one may still live, queued for cleanup)."""
        return self.outcome in ("completed", "completed_pending_cleanup")


def _never() -> bool:
    return False


def rotate_targets(rt: Runtime, names: list[str], *, grace: float | None, actor: str,
                   trigger: str = "manual", wait: bool = True,
                   lease_wait: float = 0.0, reason: str | None = None,
                   on_join: Callable[[Rotation], None] | None = None) -> list[TargetResult]:
    """Rotate each target; grace windows of a batch run side by side, not one after another.

    A target with a rotation in flight has that rotation seen to its end (``on_join`` is
    told of it), and never a second one started after it: two shells asking for the same
    rotation get one rotation and one key switch. ``reason`` (why an operator asked) is
    kept with each rotation this starts.
    """
    specs = {name: rt.spec(name) for name in names}  # unknown names fail before anything runs
    runner = Runner(providers=rt.providers, store=rt.store, repo=rt.repo, clock=rt.clock,
                    holder=holder_id(), lease_ttl=rt.config.defaults.lease_ttl,
                    call_deadline=rt.config.call_deadline(),
                    heartbeat=lambda: renew_vault_token(rt))
    renew_vault_token(rt)
    results: dict[str, TargetResult] = {}
    waiting: dict[str, datetime] = {}
    # The rotation this command sees to its end, per target: from then on it may only
    # resume it, so whoever finishes it, nothing new starts behind it.
    following: dict[str, str] = {
        name: running.rotation_id for name in specs
        if (running := rt.repo.running_rotation(name)) is not None}
    started: set[str] = set()   # started by this command: its own, not joined
    joined: set[str] = set()

    def run(name: str, lease: float) -> None:
        followed = following.get(name)
        try:
            report = runner.rotate_if(specs[name], None if followed is None else _never,
                                      trigger=trigger, actor=actor, grace=grace,
                                      wait=False, lease_wait=lease, reason=reason)
        except LeaseHeld as exc:
            results[name] = _held(rt, name, followed, exc, joined=name not in started)
            return
        except (RotatorError, LeaseLost) as exc:
            log.error("target_failed", target=name, error=str(exc))
            results[name] = TargetResult(name, "error", followed, str(exc))
            return
        # None: the rotation followed ended (another process finished it) before the lease.
        rot = report.rotation if report is not None else _stored(rt, followed)
        if report is not None and not report.resumed:
            started.add(name)
        if name not in started and name not in joined:
            joined.add(name)
            if on_join is not None:
                on_join(rot)
        following[name] = rot.rotation_id
        if rot.step is Step.GRACE and rot.grace_ends_at is not None and wait:
            waiting[name] = rot.grace_ends_at
        results[name] = _result(rt.repo, rot, name in joined)

    for name in specs:
        run(name, lease_wait)
    while waiting:
        name, due = min(waiting.items(), key=lambda item: item[1])
        rt.clock.sleep((due - rt.clock.now()).total_seconds())
        del waiting[name]
        run(name, max(lease_wait, rt.config.defaults.lease_ttl))
        # Another shell or replica is finishing the rotation followed: its result is ours.
        while results[name].outcome == "lease_held":
            run(name, rt.config.defaults.lease_ttl)
    return [results[name] for name in specs]


def _stored(rt: Runtime, rotation_id: str | None) -> Rotation:
    rot = None if rotation_id is None else rt.repo.get_rotation(rotation_id)
    assert rot is not None, "a rotation followed is never deleted"
    return rot


def _held(rt: Runtime, name: str, followed: str | None, exc: LeaseHeld, *,
          joined: bool) -> TargetResult:
    """Another live process holds the target: its result if the rotation ended, else 3."""
    rot = None if followed is None else rt.repo.get_rotation(followed)
    if rot is not None and rot.is_terminal:
        return _result(rt.repo, rot, joined)
    running = rt.repo.running_rotation(name)
    return TargetResult(name, "lease_held", running.rotation_id if running else followed,
                        lease_held_detail(rt.repo, name, exc))


def renew_vault_token(rt: Runtime) -> None:
    """Renew a renewable Vault token that is running low; a failure is logged, not fatal."""
    try:
        rt.store.renew_if_needed()
    except RotatorError as exc:
        log.warning("vault_token_renewal_failed", error=str(exc))


def _result(reader: RotationReader, rot: Rotation, joined: bool) -> TargetResult:
    """The rotation's result as its trail ends it (``completed_pending_cleanup``)."""
    if not rot.is_terminal:
        return TargetResult(rot.target, "in_progress", rot.rotation_id,
                            f"at step {rot.step.value}: {rot.reason or ''}", joined)
    outcome = ending_results(reader.events(target=rot.target)).get(
        rot.rotation_id, rot.status.value)
    return TargetResult(rot.target, outcome, rot.rotation_id, rot.reason, joined)


@dataclass(frozen=True, slots=True)
class DryRun:
    target: str
    lines: list[str]
    ok: bool


def dry_run(rt: Runtime, names: list[str], grace: float | None) -> list[DryRun]:
    """What a rotation would do, from reads only: nothing is created, written or recorded."""
    plans = []
    for name in names:
        spec = rt.spec(name)
        ref = spec.ref
        lines = [f"service account {spec.service_account}; Vault {ref.mount}/{ref.path} "
                 f"field {ref.field!r}"]
        running = rt.repo.running_rotation(name)
        if running is not None:
            lines.append(f"would join {describe_in_flight(running)} and see it to its "
                         "end; no new rotation")
            plans.append(DryRun(name, lines, True))
            continue
        try:
            current = rt.store.read_current(ref)
            who = rt.providers[spec.provider].whoami(current.secret)
        except RotatorError as exc:
            plans.append(DryRun(name, [*lines, f"would refuse: {exc}"], False))
            continue
        wait = spec.grace_seconds if grace is None else grace
        lines += [
            f"current key {who.key_id} (Vault version {current.version}) authenticates",
            f"would create a key named {key_name(name, '<rotation id>')!r}",
            f"would probe it for up to {spec.probe_timeout:g}s",
            f"would write it to Vault with check-and-set {current.version}",
            f"would wait {wait:g}s of grace, then delete key {who.key_id}",
        ]
        plans.append(DryRun(name, lines, True))
    return plans
