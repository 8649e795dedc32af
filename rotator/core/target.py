"""``TargetSpec``: everything the runner needs to rotate one target, resolved from config."""

from __future__ import annotations

from dataclasses import dataclass

from rotator.core.grace import GracePolicy
from rotator.core.model import Rotation
from rotator.core.ports import PendingCleanup, SecretRef
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

    def not_started_with(self, rot: Rotation) -> str | None:
        """Why ``rot`` must not be driven with this spec: it started with another provider
        or another Vault ref (the config changed under it). None: the same, or a row from
        before revision 0009, which recorded neither."""
        if rot.provider is not None and rot.provider != self.provider:
            return (f"rotation {rot.rotation_id} started with provider {rot.provider!r}, "
                    f"the target now names {self.provider!r}")
        if rot.vault_ref is not None and rot.vault_ref != self.ref:
            return (f"rotation {rot.rotation_id} started at Vault {_where(rot.vault_ref)}, "
                    f"the target is now at {_where(self.ref)}")
        return None

    def deletes(self, item: PendingCleanup) -> bool:
        """Whether this spec's provider is the one ``item`` was queued with (unknown before
        revision 0009: then the target's, as ever)."""
        return item.provider is None or item.provider == self.provider

    def __repr__(self) -> str:
        return (f"TargetSpec(name={self.name!r}, service_account={self.service_account!r}, "
                f"ref={self.ref!r})")


def _where(ref: SecretRef) -> str:
    return f"{ref.mount}/{ref.path} (field {ref.field})"
