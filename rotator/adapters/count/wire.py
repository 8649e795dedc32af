"""The wire side of one Count call: what was asked, and what its answer means.

Owns the reading of Count's answers (docs/count-api.md): the body size cap, the JSON
envelope (``success``, ``result``, ``request_id``, ``error.code``), typed field reads, and
the classification of a status into a value or an error of ``rotator.core.errors``:

    2xx with the envelope            the parsed value (off contract: ProtocolError)
    404 key_not_found on a delete    the parsed value, marked ``gone``
    5xx, 408, 409 (other code)       ProviderUnavailable (retried)
    429                              RateLimited (retried), after Retry-After/RateLimit-Reset
    401, 403 Unauthorized    404 KeyNotFound    409 key_limit_reached KeyLimitReached
    other 4xx ProviderError  1xx, 3xx ProtocolError

Pure: no client, no retries, no clock (the caller,
``rotator.adapters.count.client``, owns those and passes the time in). Identifiers echoed
by the server are kept only if they look like identifiers and do not hold the bearer;
errors carry identifiers only, never bodies or headers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx

from rotator.adapters.count.ratelimit import parse_ratelimit_reset, parse_retry_after
from rotator.adapters.http import MAX_BODY_BYTES
from rotator.core.errors import (
    KeyLimitReached,
    KeyNotFound,
    ProtocolError,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    RotatorError,
    Unauthorized,
)

__all__ = ["MAX_BODY_BYTES", "Answer", "Call", "Fields", "interpret"]

T = TypeVar("T")

_TOKEN = re.compile(r"[A-Za-z0-9_.:/+=~\-]{1,128}")  # shape of an echoed request id or code


@dataclass(frozen=True, slots=True)
class Call:
    """One contract call as sent: its name, method, path, body and the ids it is about."""

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


class Fields:
    """Typed reads of one JSON object of an answer; failures name the call and field.

    ``gone`` marks delete_key's 404 key_not_found: no object, the key was deleted before.
    """

    def __init__(self, call: Call, obj: Mapping[str, Any], where: str,
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

    def objects(self, name: str) -> list[Fields]:
        items = self._obj.get(name)
        if not isinstance(items, list):
            raise self._bad(name, "is missing or not a list")
        if not all(isinstance(item, dict) for item in items):
            raise self._bad(name, "holds an item that is not an object")
        return [Fields(self._call, item, f"{self._where}.{name}[{i}]")
                for i, item in enumerate(items)]


def _rfc3339(value: object) -> datetime | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        moment = datetime.fromisoformat(value)
        return moment.astimezone(UTC) if moment.tzinfo is not None else None
    except (ValueError, OverflowError):   # overflow: "9999-12-31T23:59:59-14:00" in UTC
        return None


class Answer:
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


def interpret(call: Call, answer: Answer, parse: Callable[[Fields, str | None], T],
              now: datetime) -> T | RotatorError:
    """A 2xx parsed into its value, or the error that any other answer means.

    ``now`` is when the answer arrived: a 429's Retry-After date or RateLimit-Reset epoch
    becomes seconds from then.
    """
    status, code, rid = answer.status, answer.code, answer.request_id
    if 200 <= status < 300:
        return _parse_success(call, answer, parse)
    if status == 404 and call.gone_is_success and code == "key_not_found":
        return parse(Fields(call, {}, "result", gone=True), rid)
    context = call.context(status=status, request_id=rid, code=code)
    if status == 429:
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
    elif 300 <= status < 400:
        kind, what = ProtocolError, f"Count answered a redirect ({status}), never followed"
    else:
        kind, what = ProtocolError, f"unexpected status {status}"
    return kind(f"{call.name}: {what}", **context)


def _parse_success(call: Call, answer: Answer,
                   parse: Callable[[Fields, str | None], T]) -> T | RotatorError:
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
            return parse(Fields(call, document["result"], "result"), answer.request_id)
        except ProtocolError as exc:
            return exc.with_context(status=answer.status, request_id=answer.request_id)
    return ProtocolError(f"{call.name}: the response {problem}",
                         **call.context(status=answer.status, request_id=answer.request_id))
