"""The operations both front ends call: rotate a batch (``batch``), dry run, status.

A batch goes on past a failing target and reports every target once (certbot's habit);
the caller turns the results into an exit code.
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from rotator.app.batch import TargetResult, holder_id, renew_vault_token, rotate_targets
from rotator.app.runtime import Runtime
from rotator.core.errors import RotatorError
from rotator.core.model import Rotation, Status, StoredEvent, key_name
from rotator.core.ports import RotationReader
from rotator.core.vocabulary import AuditAction, AuditResult

__all__ = ["DryRun", "TargetResult", "TargetStatus", "dry_run", "holder_id",
           "renew_vault_token", "rotate_targets", "status", "whoami_actor"]


def whoami_actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


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


