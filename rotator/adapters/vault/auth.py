"""The authenticated connection to Vault: auth methods, login, renewal, errors, retries.

Owns:

- ``TokenAuth``, ``AppRoleAuth``, ``KubernetesAuth``: frozen values; the secret parts are
  ``Secret``s, so a repr of a config never shows them.
- ``renewal_action()``: the pure decision behind ``renew_if_needed`` (decide, then act).
- ``VaultSession``: the hvac client, the login (the token is kept in memory only, never
  written to disk; ``VAULT_TOKEN`` and ``~/.vault-token`` are never read), renewal,
  readiness, and ``call()``, through which every hvac call of the adapter runs.
- The translation of hvac and requests exceptions into rotator's tree, at this boundary
  (the mapping itself is ``rotator.adapters.vault.errors``'s):

    connection refused, timeout, sealed, 408/412/429, 5xx  -> VaultUnavailable (retried)
    a redirect (3xx, never followed)                       -> VaultError
    400 "check-and-set parameter did not match"            -> CasConflict
    404 on a KV read (also a deleted/destroyed version)    -> SecretNotFound
    403 permission denied, anything else                   -> VaultError

  Context names mount, path, field, version, status, operation, auth method; never a
  token, secret id, JWT or secret value. The error is raised ``from None`` outside the
  handler, so no third-party exception (which may hold the ``X-Vault-Token`` header) is
  chained to it. With AppRole or Kubernetes auth a 403 triggers one re-login and retry.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias, TypeVar

import requests
from hvac import exceptions as hvac_errors

from rotator.adapters.http import vault_client
from rotator.adapters.retry import call_with_retry
from rotator.adapters.vault.errors import StatusAdapter, translate
from rotator.config.retry import RetryPolicy
from rotator.core.errors import TransientError, VaultError
from rotator.core.secret import Secret
from rotator.redaction import remember_secret

__all__ = [
    "AppRoleAuth",
    "KubernetesAuth",
    "RenewalAction",
    "RenewalOutcome",
    "TokenAuth",
    "VaultAuth",
    "VaultSession",
    "expect_mapping",
    "renewal_action",
]

T = TypeVar("T")

# Raised from inside hvac and requests rather than by them: a token that is no header
# value (UnicodeEncodeError, whose ``object`` is the whole token), or an answer hvac cannot
# read (a proxy's page where a login or a JSON error was expected).
_UNREADABLE = (UnicodeError, KeyError, TypeError, AttributeError)


@dataclass(frozen=True, slots=True)
class TokenAuth:
    """A Vault token handed to rotator (from the environment or a file)."""

    token: Secret


@dataclass(frozen=True, slots=True)
class AppRoleAuth:
    """AppRole login. ``role_id`` identifies the role; ``secret_id`` is the credential."""

    role_id: str
    secret_id: Secret
    mount: str = "approle"


@dataclass(frozen=True, slots=True)
class KubernetesAuth:
    """Kubernetes login with the pod's service-account JWT, read afresh at each login."""

    role: str
    jwt_path: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    mount: str = "kubernetes"


VaultAuth: TypeAlias = TokenAuth | AppRoleAuth | KubernetesAuth
RenewalAction: TypeAlias = Literal["none", "renew", "relogin"]
RenewalOutcome: TypeAlias = Literal["unchanged", "renewed", "relogged_in"]


def renewal_action(*, ttl: float, renewable: bool, relogin_possible: bool,
                   min_ttl: float) -> RenewalAction:
    """What to do about a token with ``ttl`` seconds left.

    TTL zero means the token never expires (a root token). At or above ``min_ttl``: nothing.
    Below it: renew a renewable token; else log in again if the auth method can (AppRole,
    Kubernetes). A plain token that cannot be renewed is left alone: nothing can replace it.
    """
    if ttl <= 0 or ttl >= min_ttl:
        return "none"
    if renewable:
        return "renew"
    return "relogin" if relogin_possible else "none"


def expect_mapping(value: object, what: str, context: Mapping[str, object]) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else ``VaultError`` (a response we cannot read)."""
    if not isinstance(value, Mapping):
        raise VaultError(f"unexpected Vault response: {what} is missing", **context)
    return value


# --- the session -------------------------------------------------------------------------

class VaultSession:
    """An hvac client with its auth kept alive; every call goes through ``call()``."""

    def __init__(self, url: str, auth: VaultAuth, *, namespace: str | None, timeout: float,
                 retry: RetryPolicy, verify: bool | str, proxy: str | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.auth = auth
        self._retry = retry
        self._sleep = sleep
        self._lock = threading.Lock()
        self.client = vault_client(url=url, verify=verify, namespace=namespace,
                                   timeout=timeout, adapter=StatusAdapter, proxy=proxy)
        self._logged_in = isinstance(auth, TokenAuth)
        if isinstance(auth, TokenAuth):
            self.client.token = auth.token.reveal()
        self.logins = 0  # completed logins, so renewal can tell that it re-logged in

    @property
    def can_relogin(self) -> bool:
        return not isinstance(self.auth, TokenAuth)

    def auth_context(self) -> dict[str, object]:
        """Identifiers of the auth method; never the token, secret id or JWT."""
        if isinstance(self.auth, TokenAuth):
            return {"auth": "token"}
        if isinstance(self.auth, AppRoleAuth):
            return {"auth": "approle", "auth_mount": self.auth.mount}
        return {"auth": "kubernetes", "auth_mount": self.auth.mount, "role": self.auth.role}

    def call(self, op: Callable[[], T], context: Mapping[str, object], *,
             kv_read: bool = False, relogin: bool = True, redact: tuple[str, ...] = (),
             on_retry: Callable[[int, TransientError, float], None] | None = None) -> T:
        """Run ``op``: translated errors, one re-login on 403, transient errors retried.

        ``kv_read`` makes a 404 mean ``SecretNotFound``; ``redact`` lists values to mask in
        Vault's messages (the token and the auth's secret always are).
        """
        ctx = {**self.auth_context(), **context}

        def attempt() -> T:
            if relogin and not self._logged_in:
                self._translated(self._log_in, {**ctx, "operation": "login"})
            try:
                return self._translated(op, ctx, kv_read=kv_read, redact=redact)
            except VaultError as exc:
                if not (relogin and self.can_relogin and exc.context.get("status") == "403"):
                    raise
            self._translated(self._log_in, {**ctx, "operation": "login"})
            return self._translated(op, ctx, kv_read=kv_read, redact=redact)

        return call_with_retry(attempt, self._retry, sleep=self._sleep, on_retry=on_retry)

    def login(self) -> None:
        self.call(self._log_in, {"operation": "login"}, relogin=False)

    def renew_if_needed(self, min_ttl_seconds: float) -> RenewalOutcome:
        logins = self.logins
        context: dict[str, object] = {"operation": "lookup-self"}
        info = self.call(self._lookup_self, context)
        if self.logins != logins:
            return "relogged_in"  # the token had expired (403); the fresh one is fine
        data = expect_mapping(expect_mapping(info, "response", context).get("data"),
                              "data", context)
        ttl = float(data.get("ttl") or 0)
        action = renewal_action(ttl=ttl, renewable=data.get("renewable") is True,
                                relogin_possible=self.can_relogin, min_ttl=min_ttl_seconds)
        if action == "none":
            return "unchanged"
        if action == "renew":
            # Ask for the threshold (at least the token's own TTL); Vault caps it at max TTL.
            increment = math.ceil(max(min_ttl_seconds, float(data.get("creation_ttl") or 0)))
            context = {"operation": "renew-self"}
            renewed = self.call(lambda: self._renew_self(increment), context)
            auth = expect_mapping(expect_mapping(renewed, "response", context).get("auth"),
                                  "auth", context)
            # Below the threshold even so: the max TTL is reached; only a login helps.
            if float(auth.get("lease_duration") or 0) >= min_ttl_seconds or not self.can_relogin:
                return "renewed"
        self.login()
        return "relogged_in"

    def is_ready(self) -> bool:
        try:
            health = self.client.sys.read_health_status(method="GET")
            if isinstance(health, Mapping):
                unsealed = health.get("initialized") is True and health.get("sealed") is False
            else:  # a standby answers 429 (473: performance standby), unsealed
                unsealed = getattr(health, "status_code", None) in (429, 473)
            if not unsealed:
                return False
            if not self._logged_in:
                self._log_in()
            self._lookup_self()
        except Exception:  # a readiness probe answers False whatever broke; nothing escapes
            return False
        return True

    def close(self) -> None:
        self.client.token = ""
        self._logged_in = False
        self.client.adapter.close()

    def _translated(self, op: Callable[[], T], context: Mapping[str, object], *,
                    kv_read: bool = False, redact: tuple[str, ...] = ()) -> T:
        try:
            return op()
        except (hvac_errors.VaultError, requests.RequestException, *_UNREADABLE) as exc:
            error = translate(exc, context, kv_read=kv_read,
                              redact=(*redact, *self._credentials()))
        raise error from None  # outside the handler: not even __context__ holds hvac's error

    def _credentials(self) -> tuple[str, ...]:
        """What must never show in a message: the token in use and the auth's secret."""
        held = [self.client.token]
        if isinstance(self.auth, TokenAuth):
            held.append(self.auth.token.reveal())
        elif isinstance(self.auth, AppRoleAuth):
            held.append(self.auth.secret_id.reveal())
        return tuple(value for value in held if value)

    def _log_in(self) -> None:
        """Authenticate the client (for ``TokenAuth``: verify the token with lookup-self)."""
        with self._lock:
            self._logged_in = False
            auth, client = self.auth, self.client
            if isinstance(auth, TokenAuth):
                client.token = auth.token.reveal()
                client.auth.token.lookup_self()
            elif isinstance(auth, AppRoleAuth):
                client.token = ""  # do not send an expired token along with the login
                client.auth.approle.login(role_id=auth.role_id, secret_id=auth.secret_id.reveal(),
                                          use_token=True, mount_point=auth.mount)
            else:
                client.token = ""
                client.auth.kubernetes.login(role=auth.role, jwt=self._read_jwt(auth),
                                             use_token=True, mount_point=auth.mount)
            if client.token:
                # The token this login issued: masked in every log line from now on.
                remember_secret(client.token, pinned=True)
            self._logged_in = True
            self.logins += 1

    def _read_jwt(self, auth: KubernetesAuth) -> str:
        try:
            jwt = Path(auth.jwt_path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            error = VaultError("cannot read the Kubernetes service-account token",
                               jwt_path=auth.jwt_path, reason=exc.strerror or type(exc).__name__,
                               **self.auth_context())
        else:
            if jwt:
                return jwt
            error = VaultError("the Kubernetes service-account token file is empty",
                               jwt_path=auth.jwt_path, **self.auth_context())
        raise error from None

    def _lookup_self(self) -> Any:
        return self.client.auth.token.lookup_self()

    def _renew_self(self, increment: int) -> Any:
        return self.client.auth.token.renew_self(increment=increment)
