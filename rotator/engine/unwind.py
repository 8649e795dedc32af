"""The steps that take keys away: revoke the old key, roll back, and the cleanup queue.

Each one checks first which key Vault serves right now, so that none of them can
delete the key consumers are reading, whatever happened in between.
"""

from __future__ import annotations

import structlog

from rotator.core import machine as m
from rotator.core.errors import (
    CasConflict,
    PermanentError,
    RotatorError,
    SecretNotFound,
    Unauthorized,
)
from rotator.core.model import Rotation, key_name
from rotator.core.ports import PendingCleanup
from rotator.core.target import TargetSpec
from rotator.core.vocabulary import AuditAction, AuditResult, VaultMetadataKey, vault_metadata
from rotator.engine.audit_trail import EffectResult
from rotator.engine.step_base import StepBase, deletion_result

__all__ = ["Unwinder"]

log = structlog.get_logger("rotator.unwind")

# How long the probe of a just-deleted old key waits for the provider to refuse it. Count
# revokes at once (docs/count-api.md); a provider whose deletions take a moment to reach
# every node gets this long (at most the target's probe timeout), probed at the target's
# probe interval, doubling. Short because it holds a worker and the target's lease: a
# key still authenticating after it is what a provider that did not revoke looks like.
_REVOKED_PROBE_WINDOW = 5.0
_REVOKED_PROBE_BACKOFF_CAP = 2.0


class Unwinder(StepBase):
    # -- revoke ---------------------------------------------------------------------
    def revoke(self, rot: Rotation, spec: TargetSpec) -> m.Outcome:
        assert rot.old_key_id is not None
        served = self._served_key_id(spec)
        if isinstance(served, str) and served == rot.old_key_id:
            log.error("vault_serves_old_key", key_id=rot.old_key_id)
            return self._defer(rot, spec, "Vault serves the old key again; not revoking it")
        if not isinstance(served, str):
            return self._defer(rot, spec, served.message)
        try:
            gone = self._trail.side_effect(
                rot, AuditAction.REVOKE_KEY,
                lambda: self._managing(spec, lambda auth: self._provider.delete_key(
                    spec.service_account, rot.old_key_id or "", auth)),
                deletion_result, key_id=rot.old_key_id,
                detail="grace window over: deleting the previous key")
        except RotatorError as exc:
            return self._defer(rot, spec, f"{type(exc).__name__}: {exc}")
        self._probe_revoked(rot, spec)
        return m.Revoked(already_gone=gone.already_gone)

    def _probe_revoked(self, rot: Rotation, spec: TargetSpec) -> None:
        """Probe the deleted old key and note whether the provider refuses it now.

        Its secret is Vault's version that ``plan`` read and probed (key material is
        never in SQL), read again here, so a rotation resumed after a crash probes it
        too. When that version cannot be read (Vault down, the version destroyed or
        pruned), or every probe failed for another reason, the note says the probe could
        not run (``unknown``) rather than guess. A key that still authenticates is
        ``still_valid``: the provider did not revoke it, and ``verify`` reports it.
        """
        key_id = rot.old_key_id
        try:
            if rot.old_version is None:
                raise SecretNotFound("the rotation recorded no Vault version for it")
            old = self._store.read_version(spec.ref, rot.old_version)
        except RotatorError as exc:
            self._note_probe(rot, AuditResult.UNKNOWN, None,
                             f"not probed: cannot read the old key from Vault version "
                             f"{rot.old_version}: {type(exc).__name__}: {exc}")
            return
        deadline = self._clock.now().timestamp() + min(_REVOKED_PROBE_WINDOW,
                                                       spec.probe_timeout)
        wait, attempts = spec.probe_interval, 0
        while True:
            attempts += 1
            try:
                who = self._provider.whoami(old.secret)
            except Unauthorized:
                self._note_probe(rot, AuditResult.REFUSED, old.secret.fingerprint,
                                 f"refused at probe {attempts}: the provider revoked it")
                return
            except RotatorError as exc:
                last = f"could not probe it: {type(exc).__name__}: {exc}"
                result = AuditResult.UNKNOWN
            else:
                last = (f"still authenticates as {who.service_account_id}/{who.key_id} "
                        f"after {attempts} probe(s): the provider did not revoke it")
                result = AuditResult.STILL_VALID
            remaining = deadline - self._clock.now().timestamp()
            if remaining <= 0:
                break
            self._clock.sleep(min(wait, remaining))
            wait = min(wait * 2, _REVOKED_PROBE_BACKOFF_CAP)
        self._note_probe(rot, result, old.secret.fingerprint, last)
        if result is AuditResult.STILL_VALID:
            log.error("revoked_key_still_authenticates", rotation_id=rot.rotation_id,
                      key_id=key_id, detail=last)

    def _note_probe(self, rot: Rotation, result: AuditResult, fingerprint: str | None,
                    detail: str) -> None:
        self._trail.note_with_step(rot, AuditAction.PROBE_REVOKED, result=result,
                                   key_id=rot.old_key_id, fingerprint=fingerprint,
                                   detail=detail)
        if result is AuditResult.UNKNOWN:
            log.warning("revoked_key_unprobed", rotation_id=rot.rotation_id,
                        key_id=rot.old_key_id, detail=detail)

    def _served_key_id(self, spec: TargetSpec) -> str | RotatorError:
        """The key id Vault's current secret authenticates as, or why it is unknown."""
        try:
            current = self._store.read_current(spec.ref)
            return self._provider.whoami(current.secret).key_id
        except RotatorError as exc:
            log.error("cannot_tell_served_key", error=str(exc))
            return exc

    def _defer(self, rot: Rotation, spec: TargetSpec, why: str) -> m.Outcome:
        assert rot.old_key_id is not None
        self._repo.add_cleanup(PendingCleanup(
            target=rot.target, service_account=spec.service_account, key_id=rot.old_key_id,
            rotation_id=rot.rotation_id, reason=why, provider=spec.provider),
            self._clock.now(), self._trail.lease)
        self._trail.note_with_step(rot, AuditAction.CLEANUP_QUEUED,
                                   result=AuditResult.DEFERRED, key_id=rot.old_key_id,
                                   detail=why)
        log.warning("revoke_deferred", key_id=rot.old_key_id, reason=why)
        return m.RevokeDeferred(why)

    # -- rollback -------------------------------------------------------------------
    def rollback(self, rot: Rotation, spec: TargetSpec) -> m.Outcome:
        blocked = self._restore_vault(rot, spec)
        if blocked is not None:
            return blocked
        name = key_name(rot.target, rot.rotation_id)
        try:
            listing = self._managing(
                spec, lambda auth: self._provider.list_keys(spec.service_account, auth))
            auth = self._auth(spec)    # the key that listing was answered to
        except RotatorError as exc:
            return m.RollbackBlocked(f"cannot list the provider's keys: {exc}")
        doomed = [k.key_id for k in listing.keys
                  if (k.name == name or k.key_id == rot.new_key_id)
                  and k.key_id != rot.old_key_id]
        served = self._served_key_id(spec) if doomed else None
        if isinstance(served, RotatorError):
            return m.RollbackBlocked(f"cannot tell which key Vault serves: {served}")
        if served in doomed:
            return m.RollbackBlocked(f"Vault still serves the new key {served}; not deleting it")
        pending = False
        for key_id in doomed:
            try:
                self._delete(rot, spec, key_id, "rollback: the new key is never used", auth)
            except PermanentError as exc:
                pending = True
                self._repo.add_cleanup(PendingCleanup(
                    target=rot.target, service_account=spec.service_account, key_id=key_id,
                    rotation_id=rot.rotation_id, reason=f"rollback could not delete: {exc}",
                    provider=spec.provider),
                    self._clock.now(), self._trail.lease)
            except RotatorError as exc:
                return m.RollbackBlocked(f"cannot delete the new key {key_id}: {exc}")
        self._fresh.pop(rot.rotation_id, None)
        log.error("rotation_rolled_back", reason=rot.reason)
        return m.RolledBack(cleanup_pending=pending)

    def _restore_vault(self, rot: Rotation, spec: TargetSpec) -> m.Outcome | None:
        """Put the previous version back if Vault serves our key; None when Vault is safe."""
        try:
            current = self._store.read_current(spec.ref)
        except SecretNotFound:
            return None
        except RotatorError as exc:
            return m.RollbackBlocked(f"cannot read Vault: {exc}")
        if not m.vault_holds_new_key(rot, current.version, current.secret.fingerprint,
                                     current.custom_metadata.get(VaultMetadataKey.ROTATION_ID)):
            return None
        assert rot.old_version is not None
        try:
            old = self._store.read_version(spec.ref, rot.old_version)
            self._trail.side_effect(
                rot, AuditAction.VAULT_RESTORE,
                lambda: self._store.write(spec.ref, old.secret, current.version, vault_metadata(
                    key_id=rot.old_key_id or "", rotation_id=rot.rotation_id,
                    created_at=self._clock.now().isoformat(timespec="seconds"),
                    fingerprint=old.secret.fingerprint, restored_from=str(rot.old_version))),
                lambda v: EffectResult(vault_version=v, key_id=rot.old_key_id),
                key_id=rot.old_key_id, fingerprint=old.secret.fingerprint,
                vault_version=current.version,
                detail=f"restoring version {rot.old_version} over {current.version}")
        except CasConflict as exc:
            return m.RollbackBlocked(f"Vault changed during the restore: {exc}")
        except RotatorError as exc:
            return m.RollbackBlocked(f"cannot restore Vault version {rot.old_version}: {exc}")
        finally:
            self._vault_written(spec)
        return None

    # -- the cleanup queue ----------------------------------------------------------
    def cleanup(self, spec: TargetSpec) -> tuple[int, int]:
        """Delete the keys queued for this target; returns (deleted, still pending).

        A key kept because Vault serves it leaves the queue too: it is neither.
        """
        items = self._repo.pending_cleanups(spec.name)
        if not items:
            return 0, 0
        served = self._served_key_id(spec)
        if not isinstance(served, str):
            return 0, len(items)
        done = kept = 0
        for item in items:
            rot = self._repo.get_rotation(item.rotation_id)
            if rot is None:
                continue
            elsewhere = spec.not_started_with(rot) or (
                None if spec.deletes(item) else
                f"queued for provider {item.provider!r}, the target now names {spec.provider!r}")
            if elsewhere is not None:
                # Another provider's delete would answer "not found" and let the key go
                # from the queue alive; another Vault path says nothing of what is served.
                log.error("cleanup_skipped", key_id=item.key_id, reason=elsewhere)
                continue
            if rot.is_terminal:
                # A cleanup interrupted by a crash left its intent open on a finished
                # rotation, which no resume will visit: close it before trying again.
                self._trail.close_open_intents(rot)
            if item.key_id == served:
                self._trail.note(rot, AuditAction.CLEANUP_KEY, result=AuditResult.KEPT,
                                 key_id=item.key_id,
                                 detail="queued for deletion, but Vault serves it: kept")
                self._resolve(item)
                kept += 1
                continue
            try:
                self._cleanup_one(rot, spec, item)
            except RotatorError as exc:
                log.warning("cleanup_failed", key_id=item.key_id, error=str(exc))
                continue
            # No step saves after a cleanup: its probe's note is written before the queue
            # lets the key go, so a crash cannot lose a key found still authenticating.
            self._trail.write_step_notes()
            self._resolve(item)
            done += 1
        return done, len(items) - done - kept

    def _resolve(self, item: PendingCleanup) -> None:
        self._repo.resolve_cleanup(item.target, item.key_id, self._clock.now(),
                                   self._trail.lease)

    def _cleanup_one(self, rot: Rotation, spec: TargetSpec, item: PendingCleanup) -> None:
        self._trail.side_effect(
            rot, AuditAction.CLEANUP_KEY,
            lambda: self._managing(spec, lambda auth: self._provider.delete_key(
                item.service_account, item.key_id, auth)),
            deletion_result, key_id=item.key_id, detail=f"queued: {item.reason}")
        if item.key_id == rot.old_key_id:
            # A deferred revoke, done at last. (A rollback's queued new key is not probed:
            # the old key is the one consumers held, and the one whose secret plan read.)
            self._probe_revoked(rot, spec)
