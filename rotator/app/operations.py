"""The operations both front ends call: rotate a batch (``batch``), dry run (status:
``status``).

A batch goes on past a failing target and reports every target once (certbot's habit);
the caller turns the results into an exit code.
"""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass

from rotator.app.batch import TargetResult, holder_id, renew_vault_token, rotate_targets
from rotator.app.in_flight import describe_in_flight
from rotator.app.runtime import Runtime
from rotator.core.errors import RotatorError
from rotator.core.model import key_name

__all__ = ["DryRun", "TargetResult", "dry_run", "holder_id", "renew_vault_token",
           "rotate_targets", "whoami_actor"]


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
