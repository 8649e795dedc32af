"""The operations both front ends call: rotate a batch, dry run, status.

A batch goes on past a failing target and reports every target once at the end
(certbot's habit); the caller turns the summary into an exit code.
"""

from __future__ import annotations

import getpass
import os
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import structlog

from rotator.app.runtime import Runtime
from rotator.core.errors import LeaseLost, RotatorError
from rotator.core.model import Rotation, Status, Step, StoredEvent, key_name
from rotator.core.ports import RotationReader
from rotator.core.vocabulary import AuditAction, AuditResult
from rotator.engine.runner import Runner

__all__ = ["DryRun", "TargetResult", "TargetStatus", "dry_run",
           "holder_id", "holder_is_gone", "holder_process", "rotate_targets", "status",
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


@dataclass(frozen=True, slots=True)
class TargetResult:
    target: str
    outcome: str                 # completed, rolled_back, failed, in_progress, error
    rotation_id: str | None
    detail: str | None
    resumed: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome == "completed"


def rotate_targets(rt: Runtime, names: list[str], *, grace: float | None, actor: str,
                   trigger: str = "manual", wait: bool = True,
                   lease_wait: float = 0.0, reason: str | None = None) -> list[TargetResult]:
    """Rotate each target; grace windows of a batch run side by side, not one after another.

    ``reason`` (why an operator asked) is kept with each rotation this starts.
    """
    specs = {name: rt.spec(name) for name in names}  # unknown names fail before anything runs
    runner = Runner(providers=rt.providers, store=rt.store, repo=rt.repo, clock=rt.clock,
                    holder=holder_id(), lease_ttl=rt.config.defaults.lease_ttl,
                    call_deadline=rt.config.call_deadline(),
                    heartbeat=lambda: renew_vault_token(rt))
    renew_vault_token(rt)
    results: dict[str, TargetResult] = {}
    waiting: dict[str, datetime] = {}
    resumed: set[str] = set()

    def run(name: str, lease: float) -> None:
        try:
            report = runner.rotate(specs[name], trigger=trigger, actor=actor, grace=grace,
                                   wait=False, lease_wait=lease, reason=reason)
        except (RotatorError, LeaseLost) as exc:
            log.error("target_failed", target=name, error=str(exc))
            results[name] = TargetResult(name, "error", None, str(exc))
            return
        rot = report.rotation
        if report.resumed:
            resumed.add(name)
        if rot.step is Step.GRACE and rot.grace_ends_at is not None and wait:
            waiting[name] = rot.grace_ends_at
        results[name] = _result(rot, name in resumed)

    for name in specs:
        run(name, lease_wait)
    while waiting:
        name, due = min(waiting.items(), key=lambda item: item[1])
        rt.clock.sleep((due - rt.clock.now()).total_seconds())
        del waiting[name]
        run(name, max(lease_wait, rt.config.defaults.lease_ttl))
    return [results[name] for name in specs]


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
            lines.append(f"would resume rotation {running.rotation_id} "
                         f"at step {running.step.value}")
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


@dataclass(frozen=True, slots=True)
class TargetStatus:
    target: str
    current_key_id: str | None
    key_since: datetime | None
    in_flight: Rotation | None
    last: Rotation | None
    pending_cleanups: int
    # The probes that found an old key still authenticating after its deletion: the last
    # probe of its rotation said so (``rotator verify`` probes it again).
    revoked_alive: tuple[StoredEvent, ...] = ()


def status(reader: RotationReader, targets: Iterable[str]) -> list[TargetStatus]:
    """Each target's key, age, in-flight rotation, last result, queued deletions, and the
    old keys recorded as still authenticating after their deletion."""
    out = []
    latest = reader.latest_rotations()
    running = {r.target: r for r in reader.all_running()}
    cleanups = reader.all_pending_cleanups()
    for name in targets:
        done = reader.last_completed(name)
        last = latest.get(name)
        if last is not None and last.status is Status.RUNNING:
            last = done
        out.append(TargetStatus(
            target=name,
            current_key_id=done.new_key_id if done else None,
            key_since=done.key_stored_at if done else None,
            in_flight=running.get(name), last=last,
            pending_cleanups=sum(c.target == name for c in cleanups),
            revoked_alive=_revoked_alive(reader, name)))
    return out


def _revoked_alive(reader: RotationReader, target: str) -> tuple[StoredEvent, ...]:
    last_probe: dict[str, StoredEvent] = {}     # rotation id -> its latest probe_revoked
    for event in reader.events(target=target):
        if event.action == AuditAction.PROBE_REVOKED:
            last_probe[event.rotation_id] = event
    return tuple(e for e in last_probe.values() if e.result == AuditResult.STILL_VALID)


