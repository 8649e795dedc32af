"""``TargetSpec``: everything the runner needs to rotate one target, resolved from config."""

from __future__ import annotations

from dataclasses import dataclass

from rotator.core.grace import GracePolicy
from rotator.core.ports import SecretRef
from rotator.core.secret import Secret

__all__ = ["TargetSpec"]


@dataclass(frozen=True, slots=True)
class TargetSpec:
    name: str
    provider: str
    service_account: str
    ref: SecretRef
    grace_seconds: float
    probe_timeout: float
    probe_interval: float
    # The admin management key; None in ``self`` mode, where the account's own current
    # key (read from Vault at the time of the call) manages its keys.
    management_key: Secret | None = None
    # Self-rotation: the management key is the current secret at this Vault ref (a
    # target's own path), read when needed; ``management_key`` is then None.
    management_key_ref: SecretRef | None = None
    # Usage-aware grace (``core.grace``); None: the old key goes when the window ends.
    usage_grace: GracePolicy | None = None

    def __repr__(self) -> str:
        return (f"TargetSpec(name={self.name!r}, service_account={self.service_account!r}, "
                f"ref={self.ref!r})")
