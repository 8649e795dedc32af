"""``TargetSpec``: everything the runner needs to rotate one target, resolved from config."""

from __future__ import annotations

from dataclasses import dataclass

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

    def __repr__(self) -> str:
        return (f"TargetSpec(name={self.name!r}, service_account={self.service_account!r}, "
                f"ref={self.ref!r})")
