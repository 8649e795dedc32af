"""One key provider's HTTP session: the guarded client, retries, pacing and call records.

What is the same for Count and a ``type = "http"`` provider lives here once: each call is
sent through ``rotator.adapters.http``'s client, retried by the retry policy (transient
errors only), paced per bearer by ``Pacer`` from the rate-limit headers, and reported as
one ``CallRecord`` per attempt. What differs is given: the service's name for errors, how
the key goes in the request (``auth_headers``), the rate-limit header names, and how an
answer is read (``interpret``, ``Reading``).

Errors carry identifiers only (call, status, request id, service account, key id, error
code). Key material, headers and response bodies never reach a message, and no httpx
exception (whose request holds the key) is ever chained: errors are built from what an
``except`` block noted and raised after it, ``from None``.
"""

from __future__ import annotations

import itertools
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Literal, Self, TypeVar

import httpx

from rotator.adapters.clock import SYSTEM_CLOCK
from rotator.adapters.http import ResponseRefused, body_within_cap, provider_client
from rotator.adapters.keyapi.pacing import Pacer
from rotator.adapters.keyapi.ratelimit import RateLimitState
from rotator.adapters.keyapi.wire import Answer, Call, Reading
from rotator.adapters.retry import call_with_retry
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
)
from rotator.core.secret import Secret

__all__ = ["CallRecord", "KeyApiSession", "RateLimitNames", "SessionOwner"]

T = TypeVar("T")
Outcome = Literal["ok", "transient", "permanent"]
# An answer read into a value, or the error it means; ``datetime``: when it arrived.
Interpret = Callable[[Call, Answer, datetime], "T | RotatorError"]


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


@dataclass(frozen=True, slots=True)
class RateLimitNames:
    """The headers a provider says its rate-limit window in (case-insensitive)."""

    remaining: str = "RateLimit-Remaining"
    reset: str = "RateLimit-Reset"
    limit: str = "RateLimit-Limit"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class KeyApiSession:
    """Thread-safe; ``close`` it when done.

    ``now`` (timezone-aware UTC) is what Retry-After dates and reset epochs are measured
    against, ``monotonic`` what the rate-limit windows of its bearers are kept in (one
    budget per bearer for all threads). ``on_call`` gets one ``CallRecord`` per attempt,
    synchronously, and must not raise. A ``verify`` string is a CA bundle path.
    """

    def __init__(
        self, service: str, base_url: str, *, reading: Reading, timeout: float,
        retry: RetryPolicy, auth_headers: Callable[[str], Mapping[str, str]] = bearer,
        rate_limit: RateLimitNames = RateLimitNames(),
        transport: httpx.BaseTransport | None = None, verify: bool | str = True,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = SYSTEM_CLOCK.now,
        monotonic: Callable[[], float] = time.monotonic,
        on_call: Callable[[CallRecord], None] | None = None,
        user_agent: str = "rotator/0.1", proxy: str | None = None,
    ) -> None:
        self.service, self.reading, self.rate_limit = service, reading, rate_limit
        self._retry, self._sleep, self._on_call, self._now = retry, sleep, on_call, now
        self._auth_headers = auth_headers
        self._pacer = Pacer(monotonic)   # by bearer fingerprint, never the key itself
        self._client = provider_client(
            service=service, base_url=base_url, timeout=timeout, verify=verify,
            transport=transport, proxy=proxy,
            headers={"User-Agent": user_agent, "Accept": "application/json"})

    def close(self) -> None:
        self._client.close()

    def request(self, call: Call, auth: Secret, interpret: Interpret[T],
                issued: Callable[[Answer], tuple[str, ...]] = lambda _: ()) -> T:
        """``call`` with ``auth``, retried; its value, or the ``RotatorError`` it ended in.

        ``issued``: the key an answer carries, to be kept out of its errors.
        """
        return self.counted_request(call, auth, interpret, issued)[0]

    def counted_request(self, call: Call, auth: Secret, interpret: Interpret[T],
                        issued: Callable[[Answer], tuple[str, ...]] = lambda _: (),
                        ) -> tuple[T, int]:
        """As ``request``, with the number of attempts the value took (a create answered
        at its first attempt cannot have made another key whose answer was lost)."""
        token = auth.reveal()
        if not (token.isascii() and token.isprintable()):
            raise Unauthorized(f"{call.name}: the key is not a valid bearer token",
                               **call.context())
        numbers = itertools.count(1)
        made = 0

        def attempt() -> T:
            nonlocal made
            made = next(numbers)
            return self._attempt(call, auth, made, interpret, issued)

        return call_with_retry(attempt, self._retry, sleep=self._sleep), made

    def _attempt(self, call: Call, auth: Secret, number: int, interpret: Interpret[T],
                 issued: Callable[[Answer], tuple[str, ...]]) -> T:
        self._wait_for_window(auth.fingerprint)
        started = time.monotonic()
        answer = self._exchange(call, auth)
        status = rid = None
        answered_at = self._now()   # what Retry-After and the reset header count from
        result: T | RotatorError = answer if isinstance(answer, RotatorError) else interpret(
            call, answer, answered_at)
        if isinstance(answer, Answer):
            status, rid = answer.status, answer.request_id
            self._note_window(auth.fingerprint, answer, result, answered_at)
        outcome: Outcome = ("transient" if isinstance(result, TransientError) else
                            "permanent" if isinstance(result, RotatorError) else "ok")
        if self._on_call is not None:
            self._on_call(CallRecord(call.method, call.name, status, rid, number,
                                     time.monotonic() - started, outcome))
        if isinstance(result, RotatorError):
            keys = issued(answer) if isinstance(answer, Answer) else ()
            raise _redacted(result, auth.reveal(), *keys) from None
        return result

    def _exchange(self, call: Call, auth: Secret) -> Answer | RotatorError:
        """One HTTP exchange. httpx exceptions end here, noted by class name only."""
        failure = kind = ""
        service = self.service
        try:
            request = self._client.build_request(call.method, call.path, json=call.body,
                                                 headers=self._auth_headers(auth.reveal()))
            response = self._client.send(request, stream=True)
            try:
                return Answer(response.status_code, response.headers,
                              body_within_cap(response), auth.reveal(), self.reading)
            finally:
                response.close()
        except ResponseRefused as exc:   # an encoding not asked for, a body that won't decode
            return ProtocolError(f"{call.name}: {exc}", **call.context(status=exc.status))
        except (httpx.InvalidURL, httpx.UnsupportedProtocol):
            return ConfigError(f"{call.name}: the {service} URL is invalid", None,
                               **call.context())
        except httpx.TimeoutException as exc:
            failure, kind = "timed out", type(exc).__name__
        except httpx.HTTPError as exc:   # transport, protocol, proxy, decoding errors
            if _certificate_refused(exc):  # retrying will not fix a CA mismatch
                return ProviderError(f"{call.name}: TLS certificate verification of "
                                     f"{service} failed (check the CA bundle)",
                                     **call.context(error="SSLCertVerificationError"))
            failure, kind = "could not be reached", type(exc).__name__
        return ProviderUnavailable(f"{call.name}: {service} {failure}",
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
            # Nothing is left until the server's Retry-After (or reset): every thread of
            # this bearer holds back, not only the one the retry loop puts to sleep. At
            # most as long as the retry loop waits (``max_retry_after``), so the thread it
            # wakes is not held a second time.
            wait = (None if result.retry_after is None
                    else min(result.retry_after, self._retry.max_retry_after))
            self._pacer.observe(bearer, 0, wait)
            return
        names = self.rate_limit
        state = RateLimitState.from_headers(answer.headers, answered_at,
                                            remaining=names.remaining, reset=names.reset,
                                            limit=names.limit)
        self._pacer.observe(bearer, state.remaining, state.reset_in, state.limit)


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


class SessionOwner:
    """A provider adapter on one ``KeyApiSession``: closed with it, or used with ``with``."""

    _session: KeyApiSession

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
