"""The side of each rotation step that touches the world: one method per ``Action``.

Each method performs its step's IO through the ports, records intent and outcome
through ``AuditTrail``, and returns an ``Outcome`` for the pure machine to fold in.
The decisions (what is deletable, whether Vault holds our key) stay in ``core.machine``.
"""

from __future__ import annotations

import structlog

from rotator.core import machine as m
from rotator.core.errors import (
    CasConflict,
    KeyLimitReached,
    PermanentError,
    RateLimited,
    RotatorError,
    SecretNotFound,
    TransientError,
    Unauthorized,
    VaultError,
    VaultUnavailable,
)
from rotator.core.model import FailureCode, KeyRecord, Rotation, key_name
from rotator.core.ports import NewKey, VaultSecret
from rotator.core.secret import Secret
from rotator.core.target import TargetSpec
from rotator.core.vocabulary import AuditAction, AuditResult, VaultMetadataKey, vault_metadata
from rotator.engine.audit_trail import EffectResult
from rotator.engine.crashpoints import fail_point
from rotator.engine.step_base import StepBase

__all__ = ["StepRunner"]

log = structlog.get_logger("rotator.steps")

_PROBE_BACKOFF_CAP = 10.0


class StepRunner(StepBase):
    # -- plan -----------------------------------------------------------------------
    # One return per way a plan ends: split, its reads would be spread over helpers.
    def plan(self, rot: Rotation, spec: TargetSpec) -> m.Outcome:  # noqa: PLR0911
        try:
            current = self._store.read_current(spec.ref)
        except SecretNotFound as exc:
            return m.Refused(f"no key in Vault to rotate: {exc}", FailureCode.NO_CURRENT_KEY)
        except RotatorError as exc:
            # Refused (a wrong token, a policy without this path) is the operator's to fix;
            # unreadable (sealed, unreachable) may pass on its own.
            refused = isinstance(exc, VaultError) and exc.context.get("status") in ("401", "403")
            return m.Refused(f"cannot read Vault: {exc}", FailureCode.VAULT_REFUSED if refused
                             else FailureCode.VAULT_UNREADABLE)
        try:
            who = self._provider.whoami(current.secret)
        except Unauthorized:
            log.error("vault_key_does_not_authenticate", vault_version=current.version)
            return m.Refused(
                f"the key in Vault (version {current.version}) does not authenticate at the "
                "provider; refusing to rotate: fix or re-seed it first",
                FailureCode.CURRENT_KEY_REJECTED)
        except RateLimited as exc:
            return m.Throttled(f"probe of the current key: {exc}")
        except RotatorError as exc:
            return m.Refused(f"cannot probe the current key: {exc}",
                             FailureCode.CURRENT_KEY_UNPROBED)
        if who.service_account_id != spec.service_account:
            return m.Refused(f"the key in Vault belongs to service account "
                             f"{who.service_account_id}, not {spec.service_account}",
                             FailureCode.WRONG_ACCOUNT)
        recorded = current.custom_metadata.get(VaultMetadataKey.KEY_ID)
        detail = None if recorded in (None, who.key_id) else (
            f"Vault metadata names key {recorded}; the probe says {who.key_id}")
        self._trail.note_with_step(rot, AuditAction.PLAN, key_id=who.key_id,
                                   fingerprint=current.secret.fingerprint,
                                   vault_version=current.version, request_id=who.request_id,
                                   detail=detail)
        return m.Planned(old_key_id=who.key_id, old_version=current.version)

    # -- create ---------------------------------------------------------------------
    def create(self, rot: Rotation, spec: TargetSpec) -> m.Outcome:
        name = key_name(rot.target, rot.rotation_id)
        try:
            listing = self._managing(
                spec, lambda auth: self._provider.list_keys(spec.service_account, auth))
            auth = self._auth(spec)    # the key that listing was answered to
            keys = list(listing.keys)
            for key in [k for k in keys if k.name == name and k.key_id != rot.old_key_id]:
                self._delete(rot, spec, key.key_id,
                             "left by an interrupted create: its secret was never stored", auth)
                keys.remove(key)
            try:
                new = self._create(rot, spec, name, auth)
            except KeyLimitReached:
                new = self._create_when_full(rot, spec, name, auth, keys)
            if not new.first_attempt:
                self._delete_duplicates(rot, spec, name, new.key_id, auth)
        except RateLimited as exc:
            # Waited out as long as the retry budget allows: the next run goes on from
            # here. A key made before the 429 carries this rotation's name, and the rerun
            # deletes it before it creates (above).
            return m.Throttled(str(exc))
        except RotatorError as exc:
            return m.StepFailed(f"{type(exc).__name__}: {exc}", FailureCode.CREATE_FAILED)
        self._fresh[rot.rotation_id] = new.secret
        return m.KeyCreated(key_id=new.key_id, fingerprint=new.secret.fingerprint)

    def _create(self, rot: Rotation, spec: TargetSpec, name: str, auth: Secret) -> NewKey:
        return self._trail.side_effect(
            rot, AuditAction.CREATE_KEY,
            lambda: self._provider.create_key(spec.service_account, name, auth),
            lambda k: EffectResult(key_id=k.key_id, request_id=k.request_id,
                                   detail=f"name {name}; fingerprint {k.secret.fingerprint}"),
            detail=f"name {name}")

    def _delete_duplicates(self, rot: Rotation, spec: TargetSpec, name: str, kept: str,
                           auth: Secret) -> None:
        """Delete keys a retried create left: a first attempt whose answer was lost (a 5xx
        or a timeout after the provider acted) made a key nobody will ever see the secret of.
        Not needed (one list call less) when the create was answered at its first attempt.
        """
        listing = self._provider.list_keys(spec.service_account, auth)
        for key in listing.keys:
            if key.name == name and key.key_id not in (kept, rot.old_key_id):
                self._delete(rot, spec, key.key_id, "made by a create attempt whose answer "
                             "was lost, then retried: its secret was never seen", auth)

    def _create_when_full(self, rot: Rotation, spec: TargetSpec, name: str, auth: Secret,
                          keys: list[KeyRecord]) -> NewKey:
        protected = {k for k in (rot.old_key_id,) if k}
        protected |= self._repo.protected_key_ids(spec.service_account, rot.rotation_id)
        stale = m.deletable_when_full(keys, protected, name)
        if not stale:
            raise KeyLimitReached(
                "key limit reached and every key is current or in use by a rotation; "
                "delete one by hand", service_account=spec.service_account)
        victim = stale[0]
        self._delete(rot, spec, victim.key_id,
                     f"key limit reached: stale key {victim.name!r} is not in Vault and no "
                     f"rotation uses it (last used {victim.last_used_at or 'never'})", auth)
        return self._create(rot, spec, name, auth)

    # -- verify ---------------------------------------------------------------------
    def verify(self, rot: Rotation, spec: TargetSpec) -> m.Outcome:
        secret = self._fresh[rot.rotation_id]
        deadline = self._clock.now().timestamp() + spec.probe_timeout
        wait, attempts, last = spec.probe_interval, 0, "no probe made"
        while True:
            attempts += 1
            try:
                who = self._provider.whoami(secret)
            except Unauthorized:
                last = "401: not authenticated (yet)"
            except TransientError as exc:
                last = f"{type(exc).__name__}: {exc}"
            except PermanentError as exc:
                return m.StepFailed(f"probe failed: {exc}", FailureCode.PROBE_FAILED)
            else:
                if (who.service_account_id, who.key_id) != (spec.service_account,
                                                             rot.new_key_id):
                    return m.StepFailed(
                        f"new key authenticates as {who.service_account_id}/{who.key_id}, "
                        f"expected {spec.service_account}/{rot.new_key_id}",
                        FailureCode.WRONG_IDENTITY)
                self._trail.note_with_step(rot, AuditAction.PROBE, key_id=rot.new_key_id,
                                           fingerprint=rot.new_fingerprint,
                                           request_id=who.request_id,
                                           detail=f"authenticated after {attempts} probe(s)")
                return m.Verified()
            remaining = deadline - self._clock.now().timestamp()
            if remaining <= 0:
                self._trail.note_with_step(rot, AuditAction.PROBE, result=AuditResult.ERROR,
                                           key_id=rot.new_key_id,
                                           detail=f"{attempts} probe(s) failed; last: {last}")
                return m.StepFailed(f"new key did not authenticate within "
                                    f"{spec.probe_timeout:g}s ({attempts} probes; last: {last})",
                                    FailureCode.NEVER_AUTHENTICATED)
            self._clock.sleep(min(wait, remaining))
            wait = min(wait * 2, _PROBE_BACKOFF_CAP)

    def discard(self, rot: Rotation, spec: TargetSpec) -> m.Outcome:
        self._trail.note_with_step(rot, AuditAction.SECRET_LOST, result=AuditResult.UNKNOWN,
                                   key_id=rot.new_key_id,
                                   detail="restarted after create: the new key's secret is gone; "
                                          "it will be deleted and a new key created")
        return m.SecretLost()

    # -- store ----------------------------------------------------------------------
    def store(self, rot: Rotation, spec: TargetSpec) -> m.Outcome:
        secret = self._fresh[rot.rotation_id]
        assert rot.old_version is not None and rot.new_key_id is not None
        try:
            try:
                version = self._write(rot, spec, secret, rot.old_version,
                                      f"check-and-set on {rot.old_version}")
            except CasConflict as exc:
                earlier = self._earlier_attempt(rot, spec)
                if earlier is None:
                    return m.StepFailed(f"Vault changed since plan (check-and-set lost): "
                                        f"{exc}", FailureCode.CAS_LOST)
                if earlier.secret.fingerprint == secret.fingerprint:
                    version = earlier.version   # our own write landed; its answer was lost
                else:
                    version = self._write(
                        rot, spec, secret, earlier.version,
                        f"check-and-set on {earlier.version}: replacing the key an earlier "
                        "attempt of this rotation wrote, which is not the verified one")
            fail_point(AuditAction.READ_BACK.value, VaultUnavailable)
            back = self._store.read_current(spec.ref)
        except CasConflict as exc:
            return m.StepFailed(f"Vault changed since plan (check-and-set lost): {exc}",
                                FailureCode.CAS_LOST)
        except RotatorError as exc:
            return m.StepFailed(f"{type(exc).__name__}: {exc}", FailureCode.STORE_FAILED)
        same = back.version == version and back.secret.fingerprint == secret.fingerprint
        self._trail.note_with_step(rot, AuditAction.READ_BACK,
                                   result=AuditResult.OK if same else AuditResult.ERROR,
                                   key_id=rot.new_key_id, fingerprint=back.secret.fingerprint,
                                   vault_version=back.version)
        if not same:
            return m.StepFailed(f"read-back of Vault version {back.version} does not match "
                                f"the key written as version {version}",
                                FailureCode.READ_BACK_MISMATCH)
        self._fresh.pop(rot.rotation_id, None)
        return m.Stored(version=version)

    def _write(self, rot: Rotation, spec: TargetSpec, secret: Secret, cas: int,
               detail: str) -> int:
        metadata = vault_metadata(
            key_id=rot.new_key_id or "", rotation_id=rot.rotation_id,
            created_at=self._clock.now().isoformat(timespec="seconds"),
            fingerprint=secret.fingerprint)
        try:
            return self._trail.side_effect(
                rot, AuditAction.VAULT_WRITE,
                lambda: self._store.write(spec.ref, secret, cas, metadata),
                lambda v: EffectResult(vault_version=v, key_id=rot.new_key_id),
                key_id=rot.new_key_id, fingerprint=secret.fingerprint, vault_version=cas,
                detail=detail)
        finally:
            # Landed or perhaps landed (an answer lost): a key read from here is stale.
            self._vault_written(spec)

    def _earlier_attempt(self, rot: Rotation, spec: TargetSpec) -> VaultSecret | None:
        """The Vault version to write over when it holds a key of this very rotation.

        A write of an earlier attempt (its holder frozen mid-call, or the secret lost and
        the key recreated) may land after plan: that key is not the verified one and may
        already be deleted at the provider, so the verified key replaces it rather than
        the rotation rolling back and leaving it served. Anyone else's write: ``None``.
        """
        current = self._store.read_current(spec.ref)
        ours = current.custom_metadata.get(VaultMetadataKey.ROTATION_ID) == rot.rotation_id
        if ours and current.version > (rot.old_version or 0):
            log.warning("vault_holds_earlier_attempt", vault_version=current.version,
                        key_id=current.custom_metadata.get(VaultMetadataKey.KEY_ID))
            return current
        return None

    def reconcile_store(self, rot: Rotation, spec: TargetSpec) -> m.Outcome:
        try:
            current = self._store.read_current(spec.ref)
        except RotatorError as exc:
            return m.StepFailed(f"cannot learn whether the Vault write landed: {exc}",
                                FailureCode.STORE_UNKNOWN)
        if m.vault_holds_new_key(rot, current.version, current.secret.fingerprint):
            self._trail.note_with_step(rot, AuditAction.READ_BACK, key_id=rot.new_key_id,
                                       fingerprint=current.secret.fingerprint,
                                       vault_version=current.version,
                                       detail="resumed: the interrupted Vault write had landed")
            self._vault_written(spec)
            return m.Stored(version=current.version)
        return self.discard(rot, spec)
