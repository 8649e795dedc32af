"""What every step shares: the ports, the audit trail, the management credential."""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import TypeVar

import structlog

from rotator.core.errors import Unauthorized
from rotator.core.model import Rotation
from rotator.core.ports import Clock, Deletion, KeyProvider, RotationRepository, SecretStore
from rotator.core.secret import Secret
from rotator.core.target import TargetSpec
from rotator.core.vocabulary import AuditAction, AuditResult
from rotator.engine.audit_trail import AuditTrail, EffectResult
from rotator.engine.management import ManagementKeys, bearer

__all__ = ["StepBase", "deletion_result"]

log = structlog.get_logger(__name__)

T = TypeVar("T")


def deletion_result(d: Deletion) -> EffectResult:
    return EffectResult(result=AuditResult.ALREADY_GONE if d.already_gone else AuditResult.OK,
                        key_id=d.key_id, request_id=d.request_id)


class StepBase:
    def __init__(self, provider: KeyProvider, store: SecretStore, repo: RotationRepository,
                 clock: Clock, trail: AuditTrail, fresh: MutableMapping[str, Secret],
                 keys: ManagementKeys | None = None) -> None:
        self._provider = provider
        self._store = store
        self._repo = repo
        self._clock = clock
        self._trail = trail
        self._fresh = fresh   # rotation id -> the new key's secret, in memory only
        self._keys = keys or ManagementKeys(store, clock)

    def _auth(self, spec: TargetSpec) -> Secret:
        """The bearer for key management (``management.bearer``, with this process's copy
        of a management key read from Vault)."""
        return bearer(spec, self._store, self._keys)

    def _managing(self, spec: TargetSpec, call: Callable[[Secret], T]) -> T:
        """``call(auth)`` with the management key; if the provider refuses a key read from
        Vault (self-rotation), once more with the one Vault serves now. Another process
        may have rotated it, and deleted the old one, while this one kept its copy
        (``ManagementKeys.refused``); a refused call changed nothing, so a second try is
        safe, inside the same intent."""
        auth = self._auth(spec)
        try:
            return call(auth)
        except Unauthorized:
            if spec.management_key_ref is None:
                raise
            fresh = self._keys.refused(spec.management_key_ref, auth)
            if fresh is None:
                raise
            log.info("management_key_read_again", target=spec.name,
                     fingerprint=fresh.fingerprint,
                     detail="the provider refused the copy this process held")
            return call(fresh)

    def _vault_written(self, spec: TargetSpec) -> None:
        """This target's Vault secret changed: a management key read from it is stale."""
        self._keys.written(spec.ref)

    def _delete(self, rot: Rotation, spec: TargetSpec, key_id: str, why: str,
                auth: Secret) -> Deletion:
        return self._trail.side_effect(
            rot, AuditAction.DELETE_KEY,
            lambda: self._provider.delete_key(spec.service_account, key_id, auth),
            deletion_result, key_id=key_id, detail=why)
