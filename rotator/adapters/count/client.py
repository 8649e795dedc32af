"""The Count provider: the ``KeyProvider`` port over Count's REST API, with httpx.

Owns the client side of docs/count-api.md (requests on the configured paths, the
bearer, retries, the rate-limit window) and the translation of every httpx failure and
non-2xx answer into ``rotator.core.errors`` (the status classification is
``rotator.adapters.count.wire``'s):

    timeout, transport error, 5xx, 408, 409 (other code)  ProviderUnavailable (retried)
    TLS certificate verification failed                   ProviderError (not retried)
    429                                                   RateLimited (retried)
    401, 403 Unauthorized    404 KeyNotFound    409 key_limit_reached KeyLimitReached
    other 4xx ProviderError  2xx off contract, 1xx, 3xx (never followed) ProtocolError

Errors carry identifiers only (call, status, request id, service account, key id, error
code). Key material, headers and response bodies never reach a message, and no httpx
exception (whose request holds the Authorization header) is ever chained: errors are
built from what an ``except`` block noted and raised after it, ``from None``.
"""

from __future__ import annotations

import itertools
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from types import TracebackType
from typing import Literal, Self, TypeVar
from urllib.parse import quote

import httpx

from rotator.adapters.clock import SYSTEM_CLOCK
from rotator.adapters.count.pacing import Pacer
from rotator.adapters.count.ratelimit import RateLimitState
from rotator.adapters.count.wire import (
    MAX_BODY_BYTES,
    Answer,
    Call,
    Fields,
    interpret,
)
from rotator.adapters.http import ResponseRefused, body_within_cap, count_client
from rotator.adapters.retry import call_with_retry
from rotator.config.provider import CountPaths
from rotator.config.retry import RetryPolicy
from rotator.core.errors import (
    ConfigError,
    ProtocolError,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    RotatorError,
    TransientError,
    Unauthorized,
    UsageError,
)
from rotator.core.model import KeyRecord
from rotator.core.ports import Deletion, Identity, KeyListing, NewKey
from rotator.core.secret import Secret
from rotator.redaction import forget_key, remember_secret

__all__ = ["MAX_BODY_BYTES", "CallRecord", "CountProvider"]

T = TypeVar("T")
Outcome = Literal["ok", "transient", "permanent"]

# Frozen, so one shared default is safe.
_DEFAULT_PATHS = CountPaths()
_DEFAULT_RETRY = RetryPolicy()

@dataclass(frozen=True, slots=True)
class CallRecord:
    """One HTTP attempt, for metrics and logs (``on_call``). Identifiers only."""

    method: str
    call: str                    # the contract call: "create_key", "whoami", ...
    status: int | None           # None: no answer (timeout, connection error)
    request_id: str | None
    attempt: int                 # 1-based, within one retried call
    duration_seconds: float
    outcome: Outcome


def _segment(value: str, what: str) -> str:
    if not value:
        raise UsageError(f"the {what} must not be empty")
    quoted = quote(value, safe="")
    return quoted.replace(".", "%2E") if set(value) == {"."} else quoted


def _redacted(error: RotatorError, *secrets: str) -> RotatorError:
    """Last line of defence: drop any identifier a server echoed the bearer (or the key
    the answer issues) into."""
    for secret in secrets:
        for name, value in list(error.context.items()):
            if secret in value:
                error.context[name] = "[redacted]"
        if secret in error.message:
            error.message = "[redacted]"
            error.args = ("[redacted]",)
    return error


def _issued_key(answer: Answer | RotatorError) -> tuple[str, ...]:
    """The key an answer carries (``result.api_key``), to be kept out of its errors."""
    doc = answer.document if isinstance(answer, Answer) else None
    result = doc.get("result") if isinstance(doc, dict) else None
    key = result.get("api_key") if isinstance(result, dict) else None
    return (key,) if isinstance(key, str) and key else ()


class CountProvider:
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
        self._paths, self._retry, self._sleep, self._on_call = paths, retry, sleep, on_call
        self._now = now
        self._pacer = Pacer(monotonic)   # by bearer fingerprint, never the key itself
        self._client = count_client(
            base_url=base_url, timeout=timeout, verify=verify, transport=transport, proxy=proxy,
            headers={"User-Agent": user_agent, "Accept": "application/json"})

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- the calls ----------------------------------------------------------------------

    def list_keys(self, account: str, auth: Secret) -> KeyListing:
        path = self._paths.api_keys.format(service_account=_segment(account, "account"))
        call = Call("list_keys", "GET", path, service_account=account)
        return self._request(call, auth, lambda result, rid: KeyListing(keys=tuple(
            KeyRecord(item.text("key_id"), item.text("name", allow_empty=True),
                      item.time("created_at"), item.time("last_used_at", nullable=True))
            for item in result.objects("api_keys")), request_id=rid))

    def create_key(self, account: str, name: str, auth: Secret) -> NewKey:
        path = self._paths.api_keys.format(service_account=_segment(account, "account"))
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
        path = self._paths.api_key.format(service_account=_segment(account, "account"),
                                          key_id=_segment(key_id, "key id"))
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

    # --- one call, retried ----------------------------------------------------------------

    def _request(self, call: Call, auth: Secret,
                 parse: Callable[[Fields, str | None], T]) -> T:
        return self._counted_request(call, auth, parse)[0]

    def _counted_request(self, call: Call, auth: Secret,
                         parse: Callable[[Fields, str | None], T]) -> tuple[T, int]:
        """The call's result and the number of attempts it took."""
        token = auth.reveal()
        if not (token.isascii() and token.isprintable()):
            raise Unauthorized(f"{call.name}: the key is not a valid bearer token",
                               **call.context())
        numbers = itertools.count(1)
        made = 0

        def attempt() -> T:
            nonlocal made
            made = next(numbers)
            return self._attempt(call, auth, made, parse)

        return call_with_retry(attempt, self._retry, sleep=self._sleep), made

    def _attempt(self, call: Call, auth: Secret, number: int,
                 parse: Callable[[Fields, str | None], T]) -> T:
        self._wait_for_window(auth.fingerprint)
        started = time.monotonic()
        answer = self._exchange(call, auth)
        status = rid = None
        answered_at = self._now()   # what Retry-After and RateLimit-Reset count from
        result: T | RotatorError = answer if isinstance(answer, RotatorError) else interpret(
            call, answer, parse, answered_at)
        if isinstance(answer, Answer):
            status, rid = answer.status, answer.request_id
            self._note_window(auth.fingerprint, answer, result, answered_at)
        outcome: Outcome = ("transient" if isinstance(result, TransientError) else
                            "permanent" if isinstance(result, RotatorError) else "ok")
        if self._on_call is not None:
            self._on_call(CallRecord(call.method, call.name, status, rid, number,
                                     time.monotonic() - started, outcome))
        if isinstance(result, RotatorError):
            raise _redacted(result, auth.reveal(), *_issued_key(answer)) from None
        return result

    def _exchange(self, call: Call, auth: Secret) -> Answer | RotatorError:
        """One HTTP exchange. httpx exceptions end here, noted by class name only."""
        failure = kind = ""
        headers = {"Authorization": f"Bearer {auth.reveal()}"}
        try:
            request = self._client.build_request(call.method, call.path, json=call.body,
                                                 headers=headers)
            response = self._client.send(request, stream=True)
            try:
                return Answer(response.status_code, response.headers,
                              body_within_cap(response), auth.reveal())
            finally:
                response.close()
        except ResponseRefused as exc:   # an encoding not asked for, a body that won't decode
            return ProtocolError(f"{call.name}: {exc}", **call.context(status=exc.status))
        except (httpx.InvalidURL, httpx.UnsupportedProtocol):
            return ConfigError(f"{call.name}: the Count URL is invalid", None, **call.context())
        except httpx.TimeoutException as exc:
            failure, kind = "timed out", type(exc).__name__
        except httpx.HTTPError as exc:   # transport, protocol, proxy, decoding errors
            if _certificate_refused(exc):  # retrying will not fix a CA mismatch
                return ProviderError(f"{call.name}: TLS certificate verification of Count "
                                     "failed (check the CA bundle)",
                                     **call.context(error="SSLCertVerificationError"))
            failure, kind = "could not be reached", type(exc).__name__
        return ProviderUnavailable(f"{call.name}: Count {failure}",
                                   **call.context(error=kind))

    def _wait_for_window(self, bearer: str) -> None:
        """Wait for this bearer's turn in its rate-limit window (``Pacer``), at most
        ``max_retry_after``: past that the request goes, and a 429 says if it was early."""
        turn = self._pacer.reserve(bearer)
        budget, wait = self._retry.max_retry_after, turn.wait
        while wait > 0 and budget > 0:
            self._sleep(min(wait, budget))
            budget -= wait
            wait = self._pacer.wait_more(bearer, turn)

    def _note_window(self, bearer: str, answer: Answer, result: object,
                     answered_at: datetime) -> None:
        if isinstance(result, RateLimited):
            # Nothing is left until the server's Retry-After (or RateLimit-Reset): every
            # thread of this bearer holds back, not only the one the retry loop puts to sleep.
            # At most as long as the retry loop waits (``max_retry_after``), so the thread
            # it wakes is not held a second time.
            wait = (None if result.retry_after is None
                    else min(result.retry_after, self._retry.max_retry_after))
            self._pacer.observe(bearer, 0, wait)
            return
        state = RateLimitState.from_headers(answer.headers, answered_at)
        self._pacer.observe(bearer, state.remaining, state.reset_in, state.limit)


def _certificate_refused(exc: BaseException) -> bool:
    """Whether an httpx error comes from a server certificate that did not verify."""
    seen: BaseException | None = exc
    for _ in range(10):   # httpx -> httpcore -> ssl: a short chain
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
