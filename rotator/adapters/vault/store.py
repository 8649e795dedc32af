"""The Vault KV v2 secret store (hvac): reads and check-and-set writes of one field.

``VaultStore`` satisfies ``rotator.core.ports.SecretStore``. It owns the KV v2 semantics:
which version a read returns, what a deleted or destroyed version means
(``SecretNotFound``), a missing field (``SecretNotFound`` naming the field), how a write
keeps the secret's other fields and its metadata settings, and how a write whose response
was lost is recognised on retry. The connection, auth, retries and the translation of hvac
errors into rotator's tree live in ``rotator.adapters.vault.auth`` (``VaultSession``), whose
docstring draws the translation table; no hvac or requests exception leaves this module.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from rotator.adapters.vault.auth import (
    AppRoleAuth,
    KubernetesAuth,
    RenewalOutcome,
    TokenAuth,
    VaultAuth,
    VaultSession,
    expect_mapping,
)
from rotator.config.retry import RetryPolicy
from rotator.core.errors import (
    CasConflict,
    RotatorError,
    SecretNotFound,
    TransientError,
    VaultError,
)
from rotator.core.ports import SecretRef, VaultSecret
from rotator.core.secret import Secret
from rotator.core.vocabulary import VaultMetadataKey
from rotator.redaction import remember_secret

__all__ = [
    "AppRoleAuth",
    "KubernetesAuth",
    "RenewalOutcome",
    "TokenAuth",
    "VaultAuth",
    "VaultStore",
]

_DEFAULT_RETRY = RetryPolicy()


def _ref_context(ref: SecretRef, **more: object) -> dict[str, object]:
    return {"mount": ref.mount, "path": ref.path, "field": ref.field, **more}


def _custom_metadata(metadata: object) -> dict[str, str]:
    raw = metadata.get("custom_metadata") if isinstance(metadata, Mapping) else None
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, Mapping) else {}


class VaultStore:
    """One field of a Vault KV v2 secret per ``SecretRef``.

    Cheap to construct: with AppRole or Kubernetes auth the first call logs in unless
    ``login()`` was called. ``close()`` (or ``with``) forgets the token.
    """

    def __init__(self, url: str, auth: VaultAuth, *, namespace: str | None = None,
                 timeout: float = 10.0, retry: RetryPolicy = _DEFAULT_RETRY,
                 verify: bool | str = True, proxy: str | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._url = url
        self._session = VaultSession(url, auth, namespace=namespace, timeout=timeout,
                                     retry=retry, verify=verify, proxy=proxy, sleep=sleep)

    def __repr__(self) -> str:
        return f"VaultStore(url={self._url!r}, auth={self._session.auth!r})"

    def __enter__(self) -> VaultStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- SecretStore ---------------------------------------------------------------------

    def read_current(self, ref: SecretRef) -> VaultSecret:
        """The current version; ``SecretNotFound`` if there is none or it is deleted."""
        return self._read(ref, None)

    def read_version(self, ref: SecretRef, version: int) -> VaultSecret:
        """Version ``version``; ``SecretNotFound`` if it never was, or is deleted/destroyed."""
        if version < 1:
            raise ValueError("versions start at 1")
        return self._read(ref, version)

    def write(self, ref: SecretRef, secret: Secret, cas: int,
              custom_metadata: Mapping[str, str]) -> int:
        """Check-and-set write of ``ref.field``; returns the new version.

        ``cas`` is the current version (0: the secret must not exist yet); otherwise
        ``CasConflict``. The other data fields are carried over from version ``cas``, so
        nothing written since is lost. Then ``custom_metadata`` is merged into the secret's
        custom metadata; its other keys and max_versions, cas_required and
        delete_version_after are kept.
        """
        if cas < 0:
            raise ValueError("cas must be 0 (create) or a version number")
        data, existing_metadata = self._base_of_write(ref, cas)
        data[ref.field] = secret.reveal()
        retried = False

        def note_retry(_attempt: int, _exc: TransientError, _wait: float) -> None:
            nonlocal retried
            retried = True

        conflict: CasConflict | None = None
        version: int | None = None
        try:
            version = self._put(ref, data, cas, note_retry, redact=(secret.reveal(),))
        except CasConflict as exc:
            if not retried:
                raise
            conflict = exc
        if version is None:
            # An attempt failed transiently but may have landed: if so, the new version is ours.
            version = self._landed_version(ref, secret, cas)
        if version is None:
            assert conflict is not None
            raise conflict
        self._set_custom_metadata(ref, {**existing_metadata, **custom_metadata}, version)
        return version

    # --- auth upkeep -----------------------------------------------------------------------

    def login(self) -> None:
        """Log in (AppRole, Kubernetes) or verify the token (``TokenAuth``, via lookup-self)."""
        self._session.login()

    def renew_if_needed(self, min_ttl_seconds: float = 300) -> RenewalOutcome:
        """Renew the token if renewable and its TTL is below ``min_ttl_seconds``.

        AppRole/Kubernetes: log in again when the token cannot be renewed, when renewal hit
        its max TTL below the threshold, or when it has expired. Root tokens never expire.
        """
        return self._session.renew_if_needed(min_ttl_seconds)

    def is_ready(self) -> bool:
        """Reachable, unsealed and authenticated: one attempt, no retries, never raises."""
        return self._session.is_ready()

    def close(self) -> None:
        """Forget the token and close the HTTP session."""
        self._session.close()

    # --- internals -------------------------------------------------------------------------

    def _read_raw(self, ref: SecretRef, version: int | None) -> Mapping[str, Any]:
        """``data`` of a KV v2 read: ``{"data": {...}, "metadata": {...}}``.

        A deleted or destroyed version is a 404, which ``call`` makes ``SecretNotFound``.
        """
        context = _ref_context(ref, version=version, operation="read")
        kv = self._session.client.secrets.kv.v2
        response = self._session.call(
            lambda: kv.read_secret_version(path=ref.path, version=version, mount_point=ref.mount,
                                           raise_on_deleted_version=True),
            context, kv_read=True)
        return expect_mapping(expect_mapping(response, "response", context).get("data"),
                              "data", context)

    def _read(self, ref: SecretRef, version: int | None) -> VaultSecret:
        context = _ref_context(ref, version=version, operation="read")
        payload = self._read_raw(ref, version)
        metadata = expect_mapping(payload.get("metadata"), "metadata", context)
        found = int(metadata.get("version") or 0)
        context["version"] = found or version
        data = payload.get("data")
        if data is None:
            state = "destroyed" if metadata.get("destroyed") else "deleted"
            raise SecretNotFound(f"this version of the secret is {state}", **context)
        value = expect_mapping(data, "data", context).get(ref.field)
        if value is None:
            raise SecretNotFound(f"the secret has no field {ref.field!r}", **context)
        if not isinstance(value, str) or not value:
            raise VaultError(f"field {ref.field!r} is not a non-empty string", **context)
        secret = Secret(value)
        custom_metadata = _custom_metadata(metadata)
        # Masked in every log line from the moment it is read; the key id written beside it
        # lets the registry drop it once the provider deletes that key.
        remember_secret(secret, key_id=custom_metadata.get(VaultMetadataKey.KEY_ID))
        return VaultSecret(version=found, secret=secret, custom_metadata=custom_metadata)

    def _base_of_write(self, ref: SecretRef, cas: int) -> tuple[dict[str, Any], dict[str, str]]:
        """The data and custom metadata a write builds on: those of version ``cas``."""
        if cas == 0:
            return {}, {}
        try:
            payload = self._read_raw(ref, cas)
        except SecretNotFound:
            return {}, {}  # nothing to carry over; Vault judges the check-and-set
        data = payload.get("data")
        return (dict(data) if isinstance(data, Mapping) else {},
                _custom_metadata(payload.get("metadata")))

    def _put(self, ref: SecretRef, data: dict[str, Any], cas: int,
             on_retry: Callable[[int, TransientError, float], None],
             redact: tuple[str, ...]) -> int:
        context = _ref_context(ref, cas=cas, operation="write")
        kv = self._session.client.secrets.kv.v2
        response = self._session.call(
            lambda: kv.create_or_update_secret(path=ref.path, secret=data, cas=cas,
                                               mount_point=ref.mount),
            context, redact=redact, on_retry=on_retry)
        payload = expect_mapping(expect_mapping(response, "response", context).get("data"),
                                 "data", context)
        version = int(payload.get("version") or 0)
        if version < 1:
            raise VaultError("unexpected Vault response: no version in it", **context)
        return version

    def _landed_version(self, ref: SecretRef, secret: Secret, cas: int) -> int | None:
        """The current version if it is exactly the one our write would have created."""
        try:
            current = self.read_current(ref)
        except VaultError:
            return None
        return current.version if current.version == cas + 1 and current.secret == secret else None

    def _set_custom_metadata(self, ref: SecretRef, custom_metadata: Mapping[str, str],
                             version: int) -> None:
        # A POST that carries only custom_metadata: Vault keeps the settings it omits.
        # (hvac's update_metadata always sends delete_version_after, resetting it.)
        url = f"/v1/{quote(ref.mount)}/metadata/{quote(ref.path)}"
        body = {"custom_metadata": dict(custom_metadata)}
        context = _ref_context(ref, version=version, operation="write-metadata")
        adapter = self._session.client.adapter
        try:
            self._session.call(lambda: adapter.post(url, json=body), context)
        except RotatorError as exc:
            exc.message = f"version {version} was written, not its metadata: {exc.message}"
            raise
