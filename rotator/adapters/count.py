"""The Count provider: the ``KeyProvider`` port over Count's REST API, with httpx.

Owns the wire format of count-api-contract.md (paths, envelope, status codes) and the
translation of every httpx failure and non-2xx answer into ``rotator.errors``:

    timeout, transport error, 5xx, 408, 409 (other code)  ProviderUnavailable (retried)
    429                                                   RateLimited (retried)
    401, 403 Unauthorized    404 KeyNotFound    409 key_limit_reached KeyLimitReached
    other 4xx ProviderError  2xx off contract, 1xx, 3xx ProtocolError

Errors carry identifiers only (call, status, request id, service account, key id, error
code). Key material, headers and response bodies never reach a message, and no httpx
exception (whose request holds the Authorization header) is ever chained: errors are
built from what an ``except`` block noted and raised after it, ``from None``.
"""

from __future__ import annotations

import itertools
import json
import re
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from string import Formatter
from types import TracebackType
from typing import Any, Literal, Self, TypeVar
from urllib.parse import quote

import httpx

from rotator.adapters.ratelimit import RateLimitState, parse_ratelimit_reset, parse_retry_after
from rotator.core.machine import KeyRecord
from rotator.core.ports import Deletion, Identity, KeyListing, NewKey
from rotator.core.secret import Secret
from rotator.errors import (
    ConfigError,
    KeyLimitReached,
    KeyNotFound,
    ProtocolError,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    RotatorError,
    TransientError,
    Unauthorized,
    UsageError,
)
from rotator.retry import RetryPolicy, call_with_retry

__all__ = ["MAX_BODY_BYTES", "CallRecord", "CountPaths", "CountProvider", "ServiceAccount"]

T = TypeVar("T")
Outcome = Literal["ok", "transient", "permanent"]

MAX_BODY_BYTES = 1 << 20  # a larger answer is off contract; it is not read any further
_TOKEN = re.compile(r"[A-Za-z0-9_.:/+=~\-]{1,128}")  # shape of an echoed request id or code
_PLACEHOLDERS: dict[str, set[str]] = {
    "service_accounts": set(), "api_keys": {"service_account"},
    "api_key": {"service_account", "key_id"}, "whoami": set(),
}


@dataclass(frozen=True, slots=True)
class CountPaths:
    """Path templates of the contract's calls; config may override each."""

    service_accounts: str = "/v1/service-accounts"
    api_keys: str = "/v1/service-accounts/{service_account}/api-keys"
    api_key: str = "/v1/service-accounts/{service_account}/api-keys/{key_id}"
    whoami: str = "/v1/whoami"

    def __post_init__(self) -> None:
        for item in fields(self):
            template: str = getattr(self, item.name)
            used = _placeholders(template)
            if not template.startswith("/") or used is None or not used <= _PLACEHOLDERS[item.name]:
                raise ConfigError("a Count path must start with '/' and use only the "
                                  "placeholders " + str(sorted(_PLACEHOLDERS[item.name])),
                                  key=f"paths.{item.name}")


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
class ServiceAccount:
    id: str
    name: str
    role: str


@dataclass(frozen=True, slots=True)
class _Call:
    name: str
    method: str
    path: str
    body: dict[str, str] | None = None
    service_account: str | None = None
    key_id: str | None = None
    gone_is_success: bool = False   # delete: 404 key_not_found means done already

    def context(self, **more: object) -> dict[str, object]:
        return {"call": self.name, "service_account": self.service_account,
                "key_id": self.key_id, **more}


def _placeholders(template: str) -> set[str] | None:
    try:
        return {name for _, name, _, _ in Formatter().parse(template) if name is not None}
    except ValueError:  # an unbalanced brace
        return None


class _Fields:
    """Typed reads of one JSON object of an answer; failures name the call and field.

    ``gone`` marks delete_key's 404 key_not_found: no object, the key was deleted before.
    """

    def __init__(self, call: _Call, obj: Mapping[str, Any], where: str,
                 *, gone: bool = False) -> None:
        self._call, self._obj, self._where, self.gone = call, obj, where, gone

    def _bad(self, name: str, problem: str) -> ProtocolError:
        field = f"{self._where}.{name}"
        return ProtocolError(f"{self._call.name}: field {field!r} {problem}",
                             **self._call.context(field=field))

    def text(self, name: str, *, allow_empty: bool = False) -> str:
        value = self._obj.get(name)
        if not isinstance(value, str) or not (value or allow_empty):
            raise self._bad(name, "is missing or not a " + ("string" if allow_empty
                                                            else "non-empty string"))
        return value

    def true(self, name: str) -> None:
        if self._obj.get(name) is not True:
            raise self._bad(name, "is not true")

    def equals(self, name: str, expected: str) -> None:
        if self.text(name) != expected:
            raise self._bad(name, "does not match the request")

    def time(self, name: str, *, nullable: bool = False) -> datetime | None:
        value = self._obj.get(name)
        if value is None and nullable:
            return None
        moment = _rfc3339(value)
        if moment is None:
            raise self._bad(name, "is not an RFC 3339 timestamp with an offset")
        return moment

    def objects(self, name: str) -> list[_Fields]:
        items = self._obj.get(name)
        if not isinstance(items, list):
            raise self._bad(name, "is missing or not a list")
        if not all(isinstance(item, dict) for item in items):
            raise self._bad(name, "holds an item that is not an object")
        return [_Fields(self._call, item, f"{self._where}.{name}[{i}]")
                for i, item in enumerate(items)]


def _rfc3339(value: object) -> datetime | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo is not None else None


class _Answer:
    """One HTTP answer, decoded as far as it goes: JSON document, request id, error code."""

    def __init__(self, status: int, headers: httpx.Headers, body: bytes | None,
                 bearer: str) -> None:
        self.status, self.headers, self.body = status, headers, body  # body None: too large
        self.parsed, self.document = False, None
        if body is not None:
            try:
                self.parsed, self.document = True, json.loads(body)
            except (ValueError, RecursionError):
                self.parsed = False
        doc = self.document if isinstance(self.document, dict) else {}
        rid, error = doc.get("request_id"), doc.get("error")
        rid = rid if isinstance(rid, str) else headers.get("x-request-id")
        self.request_id = _token(rid, bearer)
        self.code = _token(error.get("code"), bearer) if isinstance(error, dict) else None


def _token(value: object, bearer: str) -> str | None:
    """An identifier echoed by the server, if it looks like one: never free text, and
    never the bearer (a server may echo what it was sent)."""
    ok = isinstance(value, str) and _TOKEN.fullmatch(value) and bearer not in value
    return value if ok and isinstance(value, str) else None


def _segment(value: str, what: str) -> str:
    if not value:
        raise UsageError(f"the {what} must not be empty")
    quoted = quote(value, safe="")
    return quoted.replace(".", "%2E") if set(value) == {"."} else quoted


def _redacted(error: RotatorError, secret: str) -> RotatorError:
    """Last line of defence: drop any identifier a server echoed the bearer into."""
    for name, value in list(error.context.items()):
        if secret in value:
            error.context[name] = "[redacted]"
    if secret in error.message:
        error.message = "[redacted]"
        error.args = ("[redacted]",)
    return error


class CountProvider:
    """``KeyProvider`` for Count. Thread-safe; close it (or use ``with``) when done.

    Every call is retried by ``retry`` (transient errors only) and sleeps through
    ``sleep``; ``on_call`` gets one ``CallRecord`` per HTTP attempt, synchronously, and
    must not raise. A ``verify`` string is a CA bundle path.
    """

    def __init__(
        self,
        base_url: str,
        *,
        paths: CountPaths = CountPaths(),
        timeout: float = 10.0,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen, so a shared default is safe
        transport: httpx.BaseTransport | None = None,
        verify: bool | str = True,
        sleep: Callable[[float], None] = time.sleep,
        on_call: Callable[[CallRecord], None] | None = None,
        user_agent: str = "rotator/0.1",
    ) -> None:
        self._paths, self._retry, self._sleep, self._on_call = paths, retry, sleep, on_call
        self._resume_at: dict[str, float] = {}   # bearer fingerprint -> monotonic deadline
        self._lock = threading.Lock()
        tls: bool | ssl.SSLContext = verify if isinstance(verify, bool) else True
        if isinstance(verify, str) and transport is None:
            tls = _ca_bundle(verify)
        self._client = httpx.Client(
            base_url=base_url, timeout=httpx.Timeout(timeout), transport=transport,
            verify=tls, follow_redirects=False,
            headers={"User-Agent": user_agent, "Accept": "application/json"},
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- the calls ----------------------------------------------------------------------

    def list_service_accounts(self, auth: Secret) -> list[ServiceAccount]:
        call = _Call("list_service_accounts", "GET", self._paths.service_accounts)
        return self._request(call, auth, lambda result, _: [
            ServiceAccount(item.text("id"), item.text("name"), item.text("role"))
            for item in result.objects("service_accounts")])

    def list_keys(self, account: str, auth: Secret) -> KeyListing:
        path = self._paths.api_keys.format(service_account=_segment(account, "account"))
        call = _Call("list_keys", "GET", path, service_account=account)
        return self._request(call, auth, lambda result, rid: KeyListing(keys=tuple(
            KeyRecord(item.text("key_id"), item.text("name", allow_empty=True),
                      item.time("created_at"), item.time("last_used_at", nullable=True))
            for item in result.objects("api_keys")), request_id=rid))

    def create_key(self, account: str, name: str, auth: Secret) -> NewKey:
        path = self._paths.api_keys.format(service_account=_segment(account, "account"))
        call = _Call("create_key", "POST", path, {"name": name}, service_account=account)

        def parse(result: _Fields, rid: str | None) -> NewKey:
            secret = Secret(result.text("api_key"))
            return NewKey(key_id=result.text("key_id"), secret=secret,
                          name=result.text("name", allow_empty=True),
                          created_at=result.time("created_at"), request_id=rid)
        return self._request(call, auth, parse)

    def delete_key(self, account: str, key_id: str, auth: Secret) -> Deletion:
        path = self._paths.api_key.format(service_account=_segment(account, "account"),
                                          key_id=_segment(key_id, "key id"))
        call = _Call("delete_key", "DELETE", path, service_account=account, key_id=key_id,
                     gone_is_success=True)

        def parse(result: _Fields, rid: str | None) -> Deletion:
            if not result.gone:
                result.true("deleted")
                result.equals("key_id", key_id)
            return Deletion(key_id=key_id, already_gone=result.gone, request_id=rid)
        return self._request(call, auth, parse)

    def whoami(self, key: Secret) -> Identity:
        call = _Call("whoami", "GET", self._paths.whoami)
        return self._request(call, key, lambda result, rid: Identity(
            result.text("service_account_id"), result.text("key_id"), rid))

    # --- one call, retried ----------------------------------------------------------------

    def _request(self, call: _Call, auth: Secret,
                 parse: Callable[[_Fields, str | None], T]) -> T:
        token = auth.reveal()
        if not (token.isascii() and token.isprintable()):
            raise Unauthorized(f"{call.name}: the key is not a valid bearer token",
                               **call.context())
        numbers = itertools.count(1)
        return call_with_retry(lambda: self._attempt(call, auth, next(numbers), parse),
                               self._retry, sleep=self._sleep)

    def _attempt(self, call: _Call, auth: Secret, number: int,
                 parse: Callable[[_Fields, str | None], T]) -> T:
        self._wait_for_window(auth.fingerprint)
        started = time.monotonic()
        answer = self._exchange(call, auth)
        status = rid = None
        result: T | RotatorError = answer if isinstance(answer, RotatorError) else _interpret(
            call, answer, parse)
        if isinstance(answer, _Answer):
            status, rid = answer.status, answer.request_id
            self._note_window(auth.fingerprint, answer)
        outcome: Outcome = ("transient" if isinstance(result, TransientError) else
                            "permanent" if isinstance(result, RotatorError) else "ok")
        if self._on_call is not None:
            self._on_call(CallRecord(call.method, call.name, status, rid, number,
                                     time.monotonic() - started, outcome))
        if isinstance(result, RotatorError):
            raise _redacted(result, auth.reveal()) from None
        return result

    def _exchange(self, call: _Call, auth: Secret) -> _Answer | RotatorError:
        """One HTTP exchange. httpx exceptions end here, noted by class name only."""
        failure = kind = ""
        headers = {"Authorization": f"Bearer {auth.reveal()}"}
        try:
            request = self._client.build_request(call.method, call.path, json=call.body,
                                                 headers=headers)
            response = self._client.send(request, stream=True)
            try:
                return _Answer(response.status_code, response.headers, _read(response),
                               auth.reveal())
            finally:
                response.close()
        except (httpx.InvalidURL, httpx.UnsupportedProtocol):
            return ConfigError(f"{call.name}: the Count URL is invalid", None, **call.context())
        except httpx.TimeoutException as exc:
            failure, kind = "timed out", type(exc).__name__
        except httpx.HTTPError as exc:   # transport, protocol, proxy, decoding errors
            failure, kind = "could not be reached", type(exc).__name__
        return ProviderUnavailable(f"{call.name}: Count {failure}",
                                   **call.context(error=kind))

    def _wait_for_window(self, bearer: str) -> None:
        """Honour a RateLimit-Remaining of 0 seen earlier for this bearer."""
        with self._lock:
            deadline = self._resume_at.get(bearer)
        if deadline is None:
            return
        wait = min(deadline - time.monotonic(), self._retry.max_retry_after)
        if wait > 0:
            self._sleep(wait)
        with self._lock:
            if self._resume_at.get(bearer) == deadline:
                del self._resume_at[bearer]

    def _note_window(self, bearer: str, answer: _Answer) -> None:
        state = RateLimitState.from_headers(answer.headers, datetime.now(UTC))
        with self._lock:
            # A 429 is waited out by the retry loop (its Retry-After or RateLimit-Reset).
            if answer.status != 429 and state.exhausted and state.reset_in:
                wait = min(state.reset_in, self._retry.max_retry_after)
                self._resume_at[bearer] = time.monotonic() + wait
            else:
                self._resume_at.pop(bearer, None)


def _interpret(call: _Call, answer: _Answer,
               parse: Callable[[_Fields, str | None], T]) -> T | RotatorError:
    """A 2xx parsed into its value, or the error that any other answer means."""
    status, code, rid = answer.status, answer.code, answer.request_id
    if 200 <= status < 300:
        return _parse_success(call, answer, parse)
    if status == 404 and call.gone_is_success and code == "key_not_found":
        return parse(_Fields(call, {}, "result", gone=True), rid)
    context = call.context(status=status, request_id=rid, code=code)
    if status == 429:
        now = datetime.now(UTC)
        retry_after = parse_retry_after(answer.headers.get("retry-after"), now)
        if retry_after is None:
            retry_after = parse_ratelimit_reset(answer.headers.get("ratelimit-reset"), now)
        return RateLimited(f"{call.name}: Count is rate limiting", retry_after, **context)
    kind: type[RotatorError]
    if status == 409 and code == "key_limit_reached":
        kind, what = KeyLimitReached, "the service account holds its maximum of keys"
    elif status >= 500 or status in (408, 409):
        kind, what = ProviderUnavailable, f"Count answered {status}"
    elif status in (401, 403):
        kind, what = Unauthorized, f"the key was refused ({status})"
    elif status == 404:
        kind, what = KeyNotFound, "not found (404)"
    elif 400 <= status < 500:
        kind, what = ProviderError, f"Count rejected the request ({status})"
    else:
        kind, what = ProtocolError, f"unexpected status {status}"
    return kind(f"{call.name}: {what}", **context)


def _parse_success(call: _Call, answer: _Answer,
                   parse: Callable[[_Fields, str | None], T]) -> T | RotatorError:
    document = answer.document
    if answer.body is None:
        problem = f"is larger than {MAX_BODY_BYTES} bytes"
    elif not answer.parsed or not isinstance(document, dict):
        problem = "is not a JSON object"
    elif document.get("success") is not True:
        problem = "has no 'success': true"
    elif not isinstance(document.get("result"), dict):
        problem = "has no 'result' object"
    else:
        try:
            return parse(_Fields(call, document["result"], "result"), answer.request_id)
        except ProtocolError as exc:
            return exc.with_context(status=answer.status, request_id=answer.request_id)
    return ProtocolError(f"{call.name}: the response {problem}",
                         **call.context(status=answer.status, request_id=answer.request_id))


def _read(response: httpx.Response) -> bytes | None:
    """The (decoded) body, or None once it exceeds MAX_BODY_BYTES."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _ca_bundle(path: str) -> ssl.SSLContext:
    problem = None
    try:
        return ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        problem = type(exc).__name__
    raise ConfigError("cannot load the CA bundle for Count", key="verify", path=path,
                      error=problem)
