"""The wire side of one key-provider call: what was asked, and what its answer means.

Shared by Count's adapter and the generic HTTP provider; each says where its envelope keeps
the request id and the error code (a ``Reading``) and how a 2xx is parsed. The status
table is one for all (``failure``):

    5xx, 408, 409 (other code)       ProviderUnavailable (retried)
    429                              RateLimited (retried), after Retry-After/the reset header
    401, 403 Unauthorized    404 KeyNotFound    409 + the key-limit code KeyLimitReached
    other 4xx ProviderError  1xx, 3xx ProtocolError

Pure: no client, no retries, no clock (the caller passes the time in). Identifiers echoed
by the server are kept only if they look like identifiers and do not hold the bearer;
errors carry identifiers only, never bodies or headers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from rotator.adapters.http import MAX_BODY_BYTES
from rotator.adapters.keyapi.ratelimit import parse_ratelimit_reset, parse_retry_after
from rotator.core.errors import (
    KeyLimitReached,
    KeyNotFound,
    ProtocolError,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    RotatorError,
    Unauthorized,
    UsageError,
)

__all__ = ["MAX_BODY_BYTES", "Answer", "Call", "Fields", "Reading", "failure", "path_segment",
           "rfc3339"]

_TOKEN = re.compile(r"[A-Za-z0-9_.:/+=~\-]{1,128}")  # shape of an echoed request id or code


def path_segment(value: str, what: str) -> str:
    """``value`` as one path segment: percent-encoded, and never ``.`` or ``..``."""
    if not value:
        raise UsageError(f"the {what} must not be empty")
    quoted = quote(value, safe="")
    return quoted.replace(".", "%2E") if set(value) == {"."} else quoted


@dataclass(frozen=True, slots=True)
class Call:
    """One contract call as sent: its name, method, path, body and the ids it is about."""

    name: str
    method: str
    path: str
    body: Any = None
    service_account: str | None = None
    key_id: str | None = None
    gone_is_success: bool = False   # delete: the provider's "no such key" means done already

    def context(self, **more: object) -> dict[str, object]:
        return {"call": self.name, "service_account": self.service_account,
                "key_id": self.key_id, **more}


class Fields:
    """Typed reads of one JSON object of an answer; failures name the call and field.

    ``gone`` marks a delete answered "no such key": no object, the key was deleted before.
    A subclass reads by another address than a member name (``_get``, ``_field``).
    """

    def __init__(self, call: Call, obj: Any, where: str, *, gone: bool = False) -> None:
        self._call, self._obj, self._where, self.gone = call, obj, where, gone

    def _get(self, name: str) -> object:
        return self._obj.get(name) if isinstance(self._obj, Mapping) else None

    def _field(self, name: str) -> str:
        return f"{self._where}.{name}"

    def _child(self, item: object, index: int, name: str) -> Fields:
        return Fields(self._call, item, f"{self._field(name)}[{index}]")

    def _bad(self, name: str, problem: str) -> ProtocolError:
        field = self._field(name)
        return ProtocolError(f"{self._call.name}: field {field!r} {problem}",
                             **self._call.context(field=field))

    def text(self, name: str, *, allow_empty: bool = False) -> str:
        value = self._get(name)
        if not isinstance(value, str) or not (value or allow_empty):
            raise self._bad(name, "is missing or not a " + ("string" if allow_empty
                                                            else "non-empty string"))
        return value

    def true(self, name: str) -> None:
        if self._get(name) is not True:
            raise self._bad(name, "is not true")

    def equals(self, name: str, expected: str) -> None:
        if self.text(name) != expected:
            raise self._bad(name, "does not match the request")

    def time(self, name: str, *, nullable: bool = False) -> datetime | None:
        value = self._get(name)
        if value is None and nullable:
            return None
        moment = rfc3339(value)
        if moment is None:
            raise self._bad(name, "is not an RFC 3339 timestamp with an offset")
        return moment

    def objects(self, name: str) -> list[Fields]:
        items = self._get(name)
        if not isinstance(items, list):
            raise self._bad(name, "is missing or not a list")
        if not all(isinstance(item, dict) for item in items):
            raise self._bad(name, "holds an item that is not an object")
        return [self._child(item, i, name) for i, item in enumerate(items)]


def rfc3339(value: object) -> datetime | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        moment = datetime.fromisoformat(value)
        return moment.astimezone(UTC) if moment.tzinfo is not None else None
    except (ValueError, OverflowError):   # overflow: "9999-12-31T23:59:59-14:00" in UTC
        return None


@dataclass(frozen=True, slots=True)
class Reading:
    """Where a provider's answers keep the request id and the error code."""

    request_id: Callable[[Any], object]     # from the JSON document (None: not there)
    code: Callable[[Any], object]
    request_id_header: str | None = "X-Request-Id"   # the fallback when the body has none


class Answer:
    """One HTTP answer, decoded as far as it goes: JSON document, request id, error code."""

    def __init__(self, status: int, headers: httpx.Headers, body: bytes | None,
                 bearer: str, reading: Reading) -> None:
        self.status, self.headers, self.body = status, headers, body  # body None: too large
        self.parsed, self.document = False, None
        if body is not None:
            try:
                self.parsed, self.document = True, json.loads(body)
            except (ValueError, RecursionError):
                self.parsed = False
        rid = reading.request_id(self.document)
        if not isinstance(rid, str) and reading.request_id_header is not None:
            rid = headers.get(reading.request_id_header)
        self.request_id = _token(rid, bearer)
        self.code = _token(reading.code(self.document), bearer)


def _token(value: object, bearer: str) -> str | None:
    """An identifier echoed by the server, if it looks like one: never free text, and
    never the bearer (a server may echo what it was sent)."""
    ok = isinstance(value, str) and _TOKEN.fullmatch(value) and bearer not in value
    return value if ok and isinstance(value, str) else None


def failure(call: Call, answer: Answer, now: datetime, *, service: str,
            key_limit_code: str | None, retry_after: str = "Retry-After",
            reset: str = "RateLimit-Reset") -> RotatorError:
    """The error a non-2xx answer means (the table above). ``now``: when it arrived, what
    a 429's Retry-After date or reset epoch counts from; ``retry_after`` and ``reset``
    name the headers that say when to come back."""
    status, code, rid = answer.status, answer.code, answer.request_id
    context = call.context(status=status, request_id=rid, code=code)
    if status == 429:
        wait = parse_retry_after(answer.headers.get(retry_after), now)
        if wait is None:
            wait = parse_ratelimit_reset(answer.headers.get(reset), now)
        return RateLimited(f"{call.name}: {service} is rate limiting", wait, **context)
    kind: type[RotatorError]
    if status == 409 and code is not None and code == key_limit_code:
        kind, what = KeyLimitReached, "the service account holds its maximum of keys"
    elif status >= 500 or status in (408, 409):
        kind, what = ProviderUnavailable, f"{service} answered {status}"
    elif status in (401, 403):
        kind, what = Unauthorized, f"the key was refused ({status})"
    elif status == 404:
        kind, what = KeyNotFound, "not found (404)"
    elif 400 <= status < 500:
        kind, what = ProviderError, f"{service} rejected the request ({status})"
    elif 300 <= status < 400:
        kind, what = ProtocolError, f"{service} answered a redirect ({status}), never followed"
    else:
        kind, what = ProtocolError, f"unexpected status {status}"
    return kind(f"{call.name}: {what}", **context)
