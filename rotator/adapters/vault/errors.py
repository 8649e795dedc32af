"""The translation of hvac and requests exceptions into rotator's error tree.

Owns the mapping behind the table in ``rotator.adapters.vault.auth``'s docstring:
``translate()`` builds a new error of ours from a third-party one (a status, Vault's own
messages with known secrets masked, the caller's context) and keeps nothing of it, and
``StatusAdapter`` is the hvac adapter that keeps the status of an error hvac has no class
for, so that ``translate()`` can classify it. Applying the translation, and raising
``from None`` outside the handler, is ``VaultSession``'s job.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import requests
from hvac import exceptions as hvac_errors
from hvac.adapters import JSONAdapter

from rotator.adapters.http import ResponseRefused
from rotator.core.errors import (
    CasConflict,
    RotatorError,
    SecretNotFound,
    VaultError,
    VaultUnavailable,
)

__all__ = ["StatusAdapter", "translate"]

# hvac's classes for these statuses; any other status becomes _OtherStatus, which keeps it.
_HVAC_STATUS: dict[type[hvac_errors.VaultError], int] = {
    hvac_errors.InvalidRequest: 400, hvac_errors.Unauthorized: 401, hvac_errors.Forbidden: 403,
    hvac_errors.InvalidPath: 404, hvac_errors.RateLimitExceeded: 429,
    hvac_errors.InternalServerError: 500, hvac_errors.VaultNotInitialized: 501,
    hvac_errors.BadGateway: 502, hvac_errors.VaultDown: 503,
}
_MAPPED_STATUSES = frozenset(_HVAC_STATUS.values())
_CAS_MISMATCH = "check-and-set parameter did not match"
_MAX_DETAIL = 200


class _OtherStatus(hvac_errors.UnexpectedError):
    """An error status hvac has no class for (504, 412, ...); hvac would drop the status."""

    def __init__(self, status: int, method: str, url: str) -> None:
        super().__init__(f"HTTP {status}", method=method, url=url)
        self.status = status


class StatusAdapter(JSONAdapter):
    """hvac's JSON adapter, except that an unmapped error status is not lost."""

    def _raise_for_error(self, method: str, url: str, response: requests.Response) -> None:
        if response.status_code in _MAPPED_STATUSES:
            # An error body hvac cannot read (errors that are not strings, a JSON list)
            # makes it raise TypeError/AttributeError: keep the status, as for any other.
            with contextlib.suppress(TypeError, AttributeError):
                # a private hook of hvac's RawAdapter, absent from types-hvac
                super()._raise_for_error(method, url, response)  # type: ignore[misc]
        raise _OtherStatus(response.status_code, method, url)


def _detail(exc: hvac_errors.VaultError, redact: tuple[str, ...]) -> str:
    """Vault's own error messages, one line, known secrets masked, bounded."""
    errors = exc.errors or []
    parts = [errors] if isinstance(errors, str) else list(errors)
    text = "; ".join(" ".join(part.replace("*", " ").split()) for part in parts)
    text = text.removeprefix("1 error occurred: ")
    for secret in redact:
        text = text.replace(secret, "****")
    return text[:_MAX_DETAIL]


def translate(exc: Exception, context: Mapping[str, object], *, kv_read: bool,
              redact: tuple[str, ...]) -> RotatorError:
    """A new error of ours for a third-party one; it keeps nothing of ``exc``."""
    if isinstance(exc, ResponseRefused):   # a redirect: retrying gets the same answer
        return VaultError(str(exc), **{**context, "status": exc.status})
    if isinstance(exc, requests.exceptions.SSLError):  # retrying will not fix a CA mismatch
        return VaultError("TLS handshake with Vault failed (check the CA bundle)", **context)
    if isinstance(exc, requests.ConnectionError | requests.Timeout):
        return VaultUnavailable(f"Vault is unreachable ({type(exc).__name__})", **context)
    if not isinstance(exc, hvac_errors.VaultError):
        return VaultError(f"request to Vault failed ({type(exc).__name__})", **context)
    status = exc.status if isinstance(exc, _OtherStatus) else _HVAC_STATUS.get(type(exc))
    if status == 404 and kv_read:
        return _not_found(exc.json, context)
    return _http_error(status, _detail(exc, redact), {**context, "status": status})


def _not_found(body: object, context: Mapping[str, object]) -> SecretNotFound:
    """A KV v2 404: no secret, no such version, or a version deleted or destroyed."""
    data = body.get("data") if isinstance(body, Mapping) else None
    meta = data.get("metadata") if isinstance(data, Mapping) else None
    ctx = {**context, "status": 404}
    if not isinstance(meta, Mapping):
        return SecretNotFound("no secret at this path (or no such version)", **ctx)
    ctx["version"] = context.get("version") or meta.get("version")
    state = "destroyed" if meta.get("destroyed") else "deleted"
    return SecretNotFound(f"this version of the secret is {state}", **ctx)


def _http_error(status: int | None, detail: str, ctx: Mapping[str, object]) -> RotatorError:
    if status is not None and (status >= 500 or status in (408, 412, 429)):
        sealed = status == 503 and "sealed" in detail.lower()
        return VaultUnavailable("Vault is sealed" if sealed
                                else f"Vault is unavailable: {detail or status}", **ctx)
    if status == 400 and _CAS_MISMATCH in detail:
        return CasConflict("check-and-set failed: the secret changed since it was read", **ctx)
    verb = "denied" if status == 403 else "refused"
    return VaultError(f"Vault {verb} the request: {detail or f'HTTP {status}'}", **ctx)
