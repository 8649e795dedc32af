"""The Count provider: the ``KeyProvider`` port over Count's REST API, with httpx.

Owns the client side of docs/count-api.md (the configured paths, the calls' bodies and
what their answers hold); sending, retries, the rate-limit window and the translation of
every httpx failure are ``rotator.adapters.keyapi``'s, shared with the generic provider,
and the status classification is ``rotator.adapters.count.wire``'s:

    timeout, transport error, 5xx, 408, 409 (other code)  ProviderUnavailable (retried)
    TLS certificate verification failed                   ProviderError (not retried)
    429                                                   RateLimited (retried)
    401, 403 Unauthorized    404 KeyNotFound    409 key_limit_reached KeyLimitReached
    other 4xx ProviderError  2xx off contract, 1xx, 3xx (never followed) ProtocolError

Errors carry identifiers only; key material, headers and bodies never reach a message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import TypeVar

import httpx

from rotator.adapters.clock import SYSTEM_CLOCK
from rotator.adapters.count.wire import COUNT_READING, MAX_BODY_BYTES, interpret
from rotator.adapters.keyapi.session import CallRecord, KeyApiSession, SessionOwner
from rotator.adapters.keyapi.wire import Answer, Call, Fields, path_segment
from rotator.config.provider import CountPaths
from rotator.config.retry import RetryPolicy
from rotator.core.errors import RotatorError
from rotator.core.model import KeyRecord
from rotator.core.ports import Deletion, Identity, KeyListing, NewKey
from rotator.core.secret import Secret
from rotator.redaction import forget_key, remember_secret

__all__ = ["MAX_BODY_BYTES", "CallRecord", "CountProvider"]

T = TypeVar("T")

# Frozen, so one shared default is safe.
_DEFAULT_PATHS = CountPaths()
_DEFAULT_RETRY = RetryPolicy()


def _issued_key(answer: Answer) -> tuple[str, ...]:
    """The key an answer carries (``result.api_key``), to be kept out of its errors."""
    doc = answer.document
    result = doc.get("result") if isinstance(doc, dict) else None
    key = result.get("api_key") if isinstance(result, dict) else None
    return (key,) if isinstance(key, str) and key else ()


class CountProvider(SessionOwner):
    """``KeyProvider`` for Count. Thread-safe; close it (or use ``with``) when done.

    Every call is retried by ``retry`` (transient errors only) and sleeps through
    ``sleep``; ``now`` (timezone-aware UTC) is what Retry-After dates and RateLimit-Reset
    epochs are measured against, ``monotonic`` what the rate-limit windows of its bearers
    are kept in (``Pacer``: one budget per bearer for all threads). ``on_call`` gets one
    ``CallRecord`` per HTTP attempt, synchronously, and must not raise. A ``verify`` string
    is a CA bundle path.
    """

    def __init__(
        self,
        base_url: str,
        *,
        paths: CountPaths = _DEFAULT_PATHS,
        timeout: float = 10.0,
        retry: RetryPolicy = _DEFAULT_RETRY,
        transport: httpx.BaseTransport | None = None,
        verify: bool | str = True,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = SYSTEM_CLOCK.now,
        monotonic: Callable[[], float] = time.monotonic,
        on_call: Callable[[CallRecord], None] | None = None,
        user_agent: str = "rotator/0.1",
        proxy: str | None = None,
    ) -> None:
        self._paths = paths
        self._session = KeyApiSession(
            "Count", base_url, reading=COUNT_READING, timeout=timeout, retry=retry,
            transport=transport, verify=verify, sleep=sleep, now=now, monotonic=monotonic,
            on_call=on_call, user_agent=user_agent, proxy=proxy)

    # --- the calls ----------------------------------------------------------------------

    def list_keys(self, account: str, auth: Secret) -> KeyListing:
        path = self._paths.api_keys.format(service_account=path_segment(account, "account"))
        call = Call("list_keys", "GET", path, service_account=account)
        return self._request(call, auth, lambda result, rid: KeyListing(keys=tuple(
            KeyRecord(item.text("key_id"), item.text("name", allow_empty=True),
                      item.time("created_at"), item.time("last_used_at", nullable=True))
            for item in result.objects("api_keys")), request_id=rid))

    def create_key(self, account: str, name: str, auth: Secret) -> NewKey:
        path = self._paths.api_keys.format(service_account=path_segment(account, "account"))
        call = Call("create_key", "POST", path, {"name": name}, service_account=account)

        def parse(result: Fields, rid: str | None) -> NewKey:
            secret = Secret(result.text("api_key"))
            key_id = result.text("key_id")
            # Masked in every log line from the moment it exists, until delete_key says it
            # is gone.
            remember_secret(secret, key_id=key_id)
            if rid is not None and secret.reveal() in rid:
                rid = None  # a server that echoes the new key as the request id: not an id
            return NewKey(key_id=key_id, secret=secret,
                          name=result.text("name", allow_empty=True),
                          created_at=result.time("created_at"), request_id=rid)
        new, attempts = self._counted_request(call, auth, parse)
        return replace(new, first_attempt=attempts == 1)

    def delete_key(self, account: str, key_id: str, auth: Secret) -> Deletion:
        path = self._paths.api_key.format(service_account=path_segment(account, "account"),
                                          key_id=path_segment(key_id, "key id"))
        call = Call("delete_key", "DELETE", path, service_account=account, key_id=key_id,
                     gone_is_success=True)

        def parse(result: Fields, rid: str | None) -> Deletion:
            if not result.gone:
                result.true("deleted")
                result.equals("key_id", key_id)
            forget_key(key_id)  # revoked: a dead key needs no masking (redaction's bound)
            return Deletion(key_id=key_id, already_gone=result.gone, request_id=rid)
        return self._request(call, auth, parse)

    def whoami(self, key: Secret) -> Identity:
        call = Call("whoami", "GET", self._paths.whoami)

        def parse(result: Fields, rid: str | None) -> Identity:
            key_id = result.text("key_id")
            # Now the key's id is known (a key read from Vault may not say): delete_key can
            # drop it from the registry once it is revoked. It authenticated: it is live,
            # even if its id was deleted before (a provider that did not revoke it).
            remember_secret(key, key_id=key_id, alive=True)
            return Identity(result.text("service_account_id"), key_id, rid)
        return self._request(call, key, parse)

    def _request(self, call: Call, auth: Secret,
                 parse: Callable[[Fields, str | None], T]) -> T:
        return self._counted_request(call, auth, parse)[0]

    def _counted_request(self, call: Call, auth: Secret,
                         parse: Callable[[Fields, str | None], T]) -> tuple[T, int]:
        """The call's result and the number of attempts it took."""
        def read(call: Call, answer: Answer, now: datetime) -> T | RotatorError:
            return interpret(call, answer, parse, now)
        return self._session.counted_request(call, auth, read, _issued_key)
