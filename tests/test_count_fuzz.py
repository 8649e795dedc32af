"""Bad-input fuzzing of the Count provider, and of a rotation driven through it.

Every call of ``CountProvider`` meets generated answers: any status from 100 to 599,
random JSON, envelopes with wrong types and missing or extra fields, huge, truncated,
non-JSON and non-UTF-8 bodies, wrong or missing Content-Type, broken Content-Encoding,
streams that break, transport errors, junk rate-limit headers, and a server that echoes
the bearer everywhere. Each call returns a well-typed value or raises the ``RotatorError``
its answer means (the table in ``rotator.adapters.count.client``'s docstring), never another
exception, and never with the bearer in the error, its context or its traceback.

Then a whole rotation runs through ``Runner`` against a small in-memory Count that
answers one chosen call with garbage: the rotation ends completed, rolled back or
failed (or, blocked, is finished by the next run), Vault serves a key that
authenticates, no key is left behind, and every audit intent has its outcome.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import re
import secrets
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import structlog
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from rotator.adapters.count.client import MAX_BODY_BYTES, CallRecord, CountProvider
from rotator.config.retry import RetryPolicy
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
from rotator.core.model import Status, Step
from rotator.core.ports import Deletion, Identity, KeyListing, NewKey, SecretRef
from rotator.core.secret import Secret
from rotator.core.target import TargetSpec
from rotator.core.vocabulary import EventKind
from rotator.engine.runner import Runner
from tests.fakes import FakeClock, FakeStore, MemoryRepository

BASE = "https://count.test"
BEARER_VALUE = "cnt_" + "3f9a0c7d1e5b" * 3 + "8d2c"    # "cnt_" + 40 hex digits
BEARER = Secret(BEARER_VALUE)
ACCOUNT, KEY_ID = "sa_1", "key_0001"
POLICY = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0, max_elapsed=1e6)
FUZZ = settings(deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CALLS = ["whoami", "list_keys", "create_key", "delete_key"]
T0 = "2026-11-01T12:00:00Z"


# --- answers --------------------------------------------------------------------------------

def _short(data: bytes) -> str:
    return repr(data) if len(data) <= 80 else f"{data[:60]!r}... ({len(data)} bytes)"


class BrokenStream(httpx.SyncByteStream):
    """A body that breaks off mid-read, as a dropped connection does."""

    def __init__(self, head: bytes) -> None:
        self._head = head

    def __iter__(self) -> Iterator[bytes]:
        yield self._head
        raise httpx.ReadError(f"connection reset (Bearer {BEARER_VALUE})")


@dataclass(frozen=True)
class Reply:
    """One generated answer: an HTTP response, a broken one, or a transport error."""

    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str | bytes], ...] = ()
    broken: str | None = None            # "stream": the body breaks off; "encoding": bad gzip
    raises: type[httpx.HTTPError] | None = None

    def __repr__(self) -> str:
        what = self.raises.__name__ if self.raises else f"{self.status} {_short(self.body)}"
        return f"Reply({what}, headers={list(self.headers)!r}, broken={self.broken})"

    def respond(self, request: httpx.Request) -> httpx.Response:
        if self.raises is not None:
            # The message holds the bearer: it must never surface (no chaining of httpx errors).
            raise self.raises(f"failed with Bearer {BEARER_VALUE}", request=request)
        # A server sends bytes; httpx would refuse to encode a non-ASCII str itself.
        headers = [(k, v.encode("latin-1") if isinstance(v, str) else v)
                   for k, v in self.headers]
        if self.broken == "stream":
            return httpx.Response(self.status, headers=headers,
                                  stream=BrokenStream(self.body[:10]))
        if self.broken == "encoding":
            headers.append(("Content-Encoding", "gzip"))
        return httpx.Response(self.status, headers=headers, content=self.body)


def code_of(body: bytes) -> str | None:
    """The contract error code an answer's body carries, as far as the tests rely on one."""
    if len(body) > MAX_BODY_BYTES:
        return None
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    error = doc.get("error") if isinstance(doc, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if code in ("key_limit_reached", "key_not_found") else None


def allowed_outcomes(reply: Reply, call: str) -> set[type[RotatorError] | None]:
    """What an answer may give: ``None`` is a value; else the exact error type."""
    if reply.raises is not None:
        return {ProviderUnavailable}
    status, code = reply.status, code_of(reply.body)
    redirect = 300 <= status < 400   # refused, its body not read: a stream break goes unseen
    if reply.broken == "stream" and not redirect:
        return {ProviderUnavailable}
    by_status: set[type[RotatorError] | None]
    if redirect:
        by_status = {ProtocolError}
    elif 200 <= status < 300:
        by_status = {None, ProtocolError}
    elif status == 404 and call == "delete_key" and code == "key_not_found":
        by_status = {None}
    elif status == 429:
        by_status = {RateLimited}
    elif status == 409 and code == "key_limit_reached":
        by_status = {KeyLimitReached}
    elif status >= 500 or status in (408, 409):
        by_status = {ProviderUnavailable}
    elif status in (401, 403):
        by_status = {Unauthorized}
    elif status == 404:
        by_status = {KeyNotFound}
    elif 400 <= status < 500:
        by_status = {ProviderError}
    else:
        by_status = {ProtocolError}
    if reply.broken == "encoding":   # decoding may fail (transient) or find nothing to decode
        by_status.add(ProviderUnavailable)
    return by_status


# --- strategies -------------------------------------------------------------------------------

FIELDS = ["success", "result", "request_id", "error", "code", "message", "service_accounts",
          "id", "name", "role", "api_keys", "key_id", "created_at", "last_used_at", "api_key",
          "deleted", "service_account_id", "x"]
leaf_text = st.one_of(
    st.text(max_size=12),
    st.sampled_from([KEY_ID, ACCOUNT, T0, "2026-11-01T12:00:00", "2026-13-01T00:00:00Z",
                     "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "x" * 200,
                     BEARER_VALUE, f"echo {BEARER_VALUE}", "key_limit_reached",
                     "key_not_found", "req_0001", "", "\x00", "\ud800"]))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | leaf_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(FIELDS) | st.text(max_size=4), inner, max_size=6),
    max_leaves=16)


def _results(call: str) -> st.SearchStrategy[dict[str, Any]]:
    """A result that satisfies the contract for ``call``."""
    text = st.text(min_size=1, max_size=8) | st.just(KEY_ID)
    stamp = st.sampled_from([T0, "2026-11-01T14:00:00.250+02:00"])
    if call == "whoami":
        return st.fixed_dictionaries({"service_account_id": text, "key_id": text})
    if call == "create_key":
        return st.fixed_dictionaries({"key_id": text, "name": st.text(max_size=8),
                                      "api_key": text, "created_at": stamp})
    if call == "delete_key":
        return st.just({"key_id": KEY_ID, "deleted": True})
    item = st.fixed_dictionaries({"key_id": text, "name": st.text(max_size=8),
                                  "created_at": stamp, "last_used_at": st.none() | stamp})
    return st.fixed_dictionaries({"api_keys": st.lists(item, max_size=3)})


@st.composite
def mangled(draw: st.DrawFn, result: dict[str, Any]) -> dict[str, Any]:
    """Drop a field, give one a wrong type, add extra fields (maybe in list items too)."""
    result = json.loads(json.dumps(result))
    targets = [result] + [item for value in result.values() if isinstance(value, list)
                          for item in value if isinstance(item, dict)]
    target = draw(st.sampled_from(targets))
    how = draw(st.sampled_from(["drop", "retype", "extra", "keep"]))
    if how == "drop" and target:
        del target[draw(st.sampled_from(sorted(target)))]
    elif how == "retype" and target:
        target[draw(st.sampled_from(sorted(target)))] = draw(json_values)
    elif how == "extra":
        target.update(draw(st.dictionaries(st.text(max_size=6), json_values, max_size=3)))
    return result


@st.composite
def envelopes(draw: st.DrawFn, call: str) -> dict[str, Any]:
    if draw(st.booleans()):
        doc: dict[str, Any] = {"success": draw(st.sampled_from([True, True, "true", 1, None])),
                               "result": draw(mangled(draw(_results(call))))}
    else:
        doc = {"success": False, "error": {
            "code": draw(leaf_text | st.sampled_from(["key_limit_reached", "key_not_found",
                                                      "rate_limited", "unauthorized"])),
            "message": draw(st.sampled_from([BEARER_VALUE, "<b>no</b>", ""]))}}
    doc["request_id"] = draw(st.sampled_from(["req_1", BEARER_VALUE, 7, None, "a b", "r" * 200]))
    if draw(st.booleans()):
        del doc[draw(st.sampled_from(sorted(doc)))]
    return doc


HUGE_PAD = b" " * (5 * 1024 * 1024)
ODD_BODIES = [
    b"", b"null", b"[]", b"{}", b"NaN", b'{"success": true, "result": NaN}',
    b"<html><body><h1>502 Bad Gateway</h1></body></html>",
    b"[" * 100_000, b"1" * 5000, b"x" * (5 * 1024 * 1024),
    json.dumps({"success": True, "result": {"x": "y" * (5 * 1024 * 1024)}}).encode(),
]


@functools.cache
def _bodies(call: str) -> st.SearchStrategy[bytes]:
    envelope = envelopes(call).map(lambda d: json.dumps(d).encode())
    return st.one_of(
        envelope,
        envelope,
        json_values.map(lambda v: json.dumps(v).encode()),
        st.tuples(envelope, st.integers(0, 200)).map(lambda t: t[0][: t[1]]),   # truncated
        envelope.map(lambda b: b.replace(b'"', b"'")),                         # not JSON
        envelope.map(lambda b: b.replace(b'"req_1"', b'"\xff\xfe"')),          # not UTF-8
        envelope.map(lambda b: b.decode().encode("utf-16")),                  # UTF-16
        envelope.map(lambda b: b + HUGE_PAD),                                  # 5 MB of JSON
        envelope.map(lambda b: b[:-1] + b' ' * (MAX_BODY_BYTES - len(b)) + b"}"),  # at the cap
        st.binary(max_size=64),
        st.sampled_from(ODD_BODIES),
    )


HEADER_VALUES = st.one_of(
    st.sampled_from(["0", "1", "120", "-1", "1.5", "1e9", "nan", "inf", "", " ", "99" * 30,
                     "4102444800", "9" * 25, "Wed, 21 Oct 2015 07:28:00 GMT",
                     "Fri, 31 Dec 9999 23:59:59 GMT", "Mon, 01 Jan 0001 00:00:00 GMT",
                     "10, 10;w=1", ";;,", BEARER_VALUE]),
    st.text(st.characters(codec="latin-1", exclude_categories=["Cc"]), max_size=40),
    st.binary(max_size=20).map(lambda b: bytes(c for c in b if c not in b"\r\n\x00")),
)
HEADER_NAMES = ["Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset",
                "X-Request-Id", "Content-Type"]
CONTENT_TYPES = ["application/json", "application/json; charset=utf-16", "text/html",
                 "text/plain; charset=latin-1", "application/problem+json", "\xe9/\xe9"]
TRANSPORT_ERRORS = [httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadTimeout,
                    httpx.WriteTimeout, httpx.PoolTimeout, httpx.ReadError, httpx.WriteError,
                    httpx.RemoteProtocolError, httpx.LocalProtocolError, httpx.ProxyError]
STATUSES = st.one_of(st.integers(100, 599),
                     st.sampled_from([200, 201, 204, 400, 401, 403, 404, 408, 409, 429, 500,
                                      502, 503]))


@st.composite
def replies(draw: st.DrawFn, call: str) -> Reply:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return Reply(raises=draw(st.sampled_from(TRANSPORT_ERRORS)))
    headers: list[tuple[str, str | bytes]] = []
    if draw(st.booleans()):
        headers.append(("Content-Type", draw(st.sampled_from(CONTENT_TYPES))))
    headers += draw(st.lists(st.tuples(st.sampled_from(HEADER_NAMES), HEADER_VALUES),
                             max_size=4))
    if kind <= 2:   # an answer on contract, maybe with extra fields and junk headers
        result = draw(_results(call))
        result.update(draw(st.dictionaries(st.text(max_size=6).filter(
            lambda k: k not in result), json_values, max_size=2)))
        body = {"success": True, "request_id": draw(leaf_text), "result": result}
        return Reply(draw(st.sampled_from([200, 201, 299])), json.dumps(body).encode(),
                     tuple(headers))
    broken = draw(st.sampled_from([None] * 8 + ["stream", "encoding"]))
    return Reply(draw(STATUSES), draw(_bodies(call)), tuple(headers), broken)


# --- one call, any answer ------------------------------------------------------------------------

@dataclass
class Script:
    """Serves the replies in order, the last one again and again; notes what it served."""

    replies: list[Reply]
    served: list[Reply] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        reply = self.replies[min(len(self.served), len(self.replies) - 1)]
        self.served.append(reply)
        self.requests.append(request)
        return reply.respond(request)


def perform(provider: CountProvider, call: str, auth: Secret = BEARER) -> object:
    if call == "whoami":
        return provider.whoami(auth)
    if call == "list_keys":
        return provider.list_keys(ACCOUNT, auth)
    if call == "create_key":
        return provider.create_key(ACCOUNT, "rotator:app:rot_1", auth)
    return provider.delete_key(ACCOUNT, KEY_ID, auth)


def assert_clean(exc: BaseException, secret: str = BEARER_VALUE) -> None:
    """No trace of the bearer anywhere an error could be shown, and no httpx chained."""
    assert secret not in "".join(traceback.format_exception(exc))
    assert secret not in str(exc) and secret not in repr(exc) and secret not in repr(exc.args)
    if isinstance(exc, RotatorError):
        assert not any(secret in f"{k}={v}" for k, v in exc.context.items())
        assert secret not in exc.message
    assert exc.__cause__ is None and exc.__context__ is None


def assert_well_typed(call: str, value: object) -> None:
    def ident(text: object) -> None:
        assert isinstance(text, str) and text

    def rid(text: object) -> None:
        assert text is None or (isinstance(text, str) and BEARER_VALUE not in text
                                and re.fullmatch(r"[A-Za-z0-9_.:/+=~\-]{1,128}", text))

    def moment(when: object, nullable: bool = False) -> None:
        assert (nullable and when is None) or (isinstance(when, datetime)
                                               and when.utcoffset() == timedelta(0))

    if call == "whoami":
        assert isinstance(value, Identity)
        ident(value.service_account_id)
        ident(value.key_id)
        rid(value.request_id)
    elif call == "list_keys":
        assert isinstance(value, KeyListing)
        rid(value.request_id)
        for key in value.keys:
            ident(key.key_id)
            assert isinstance(key.name, str)
            moment(key.created_at)
            moment(key.last_used_at, nullable=True)
    elif call == "create_key":
        assert isinstance(value, NewKey) and isinstance(value.secret, Secret)
        ident(value.key_id)
        ident(value.secret.reveal())
        assert isinstance(value.name, str)
        moment(value.created_at)
        rid(value.request_id)
    else:
        assert isinstance(value, Deletion) and value.key_id == KEY_ID
        assert isinstance(value.already_gone, bool)
        rid(value.request_id)


@st.composite
def scripts(draw: st.DrawFn) -> tuple[str, list[Reply]]:
    call = draw(st.sampled_from(CALLS))
    return call, draw(st.lists(replies(call), min_size=1, max_size=3))


@settings(FUZZ, max_examples=400)
@given(scripted=scripts(), attempts=st.integers(1, 3))
@example(scripted=("whoami", [Reply(200, b"[" * 100_000)]), attempts=1)
@example(scripted=("create_key", [Reply(201, b"1" * 5000)]), attempts=1)
@example(scripted=("list_keys", [Reply(200, b'{"success": true, "result": {"api_keys": '
                                            b'[{"key_id": "k", "name": "", "created_at": '
                                            b'"9999-12-31T23:59:59-14:00"}]}}')]), attempts=1)
@example(scripted=("delete_key", [Reply(429, headers=(("Retry-After", "9" * 25),)),
                                  Reply(404, b'{"error": {"code": "key_not_found"}}')]),
         attempts=3)
def test_any_answer_is_a_value_or_the_error_it_means(scripted: tuple[str, list[Reply]],
                                                     attempts: int) -> None:
    call, script_replies = scripted
    script = Script(script_replies)
    records: list[CallRecord] = []
    policy = RetryPolicy(max_attempts=attempts, base_delay=0.0, max_delay=0.0,
                         max_elapsed=1e6)
    with CountProvider(BASE, transport=httpx.MockTransport(script), retry=policy,
                       sleep=lambda _: None, on_call=records.append) as provider:
        try:
            value = perform(provider, call)
        except RotatorError as exc:
            outcome: type[RotatorError] | None = type(exc)
            assert_clean(exc)
            assert exc.context.get("call") == call
        else:
            outcome = None
            assert_well_typed(call, value)
    last = script.served[-1]
    assert outcome in allowed_outcomes(last, call), (last, outcome)
    event(f"outcome: {outcome.__name__ if outcome else 'value'}")
    assert len(script.served) == len(records) <= attempts
    transient = outcome is not None and issubclass(outcome, ProviderUnavailable)
    assert len(script.served) == attempts or not transient   # retried until spent
    for record in records:
        assert record.call == call and record.request_id != BEARER_VALUE
        assert record.request_id is None or BEARER_VALUE not in record.request_id
    for request in script.requests:   # and what went out followed the contract
        assert request.headers["authorization"] == f"Bearer {BEARER_VALUE}"
        if call == "create_key":
            assert json.loads(request.content) == {"name": "rotator:app:rot_1"}


def test_the_body_cap_is_exact() -> None:
    """A contract answer of exactly MAX_BODY_BYTES is read; one byte more is refused."""
    doc = json.dumps({"success": True, "result": {"service_account_id": ACCOUNT,
                                                  "key_id": KEY_ID}}).encode()
    at_cap = doc[:-1] + b" " * (MAX_BODY_BYTES - len(doc)) + b"}"
    assert len(at_cap) == MAX_BODY_BYTES
    for body, ok in ((at_cap, True), (at_cap + b" ", False)):
        script = Script([Reply(200, body)])
        with CountProvider(BASE, transport=httpx.MockTransport(script), retry=POLICY,
                           sleep=lambda _: None) as provider:
            if ok:
                assert provider.whoami(BEARER) == Identity(ACCOUNT, KEY_ID, None)
            else:
                with pytest.raises(ProtocolError, match="larger than"):
                    provider.whoami(BEARER)


class Endless(httpx.SyncByteStream):
    """A body streamed in 64 KiB chunks, 5 MiB in all; counts what was read of it."""

    def __init__(self) -> None:
        self.chunks = 0

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(80):
            self.chunks += 1
            yield b" " * 65536


@pytest.mark.parametrize("status", [200, 503, 429])
def test_a_huge_streamed_body_is_not_read_past_the_cap(status: int) -> None:
    stream = Endless()
    transport = httpx.MockTransport(lambda _: httpx.Response(status, stream=stream))
    with CountProvider(BASE, transport=transport, retry=RetryPolicy(max_attempts=1),
                       sleep=lambda _: None) as provider, pytest.raises(RotatorError) as caught:
        provider.whoami(BEARER)
    expected = {200: ProtocolError, 503: ProviderUnavailable, 429: RateLimited}[status]
    assert type(caught.value) is expected
    assert stream.chunks == MAX_BODY_BYTES // 65536 + 1   # stopped just past 1 MiB


@settings(FUZZ, max_examples=150)
@given(bearer=st.text(max_size=60), account=st.text(max_size=20),
       key_id=st.text(max_size=20), name=st.text(max_size=120))
@example(bearer="cnt_x\r\nX-Injected: 1", account="..", key_id="a/../b", name="x")
@example(bearer="cnt_\u00e9", account="sa 1", key_id="\x00", name="\ud7ff")
def test_any_argument_is_sent_safely_or_refused(bearer: str, account: str, key_id: str,
                                                name: str) -> None:
    answer = {"success": True, "request_id": "req_1", "result": {
        "key_id": key_id or "k", "deleted": True, "name": name, "api_key": "cnt_new",
        "created_at": T0, "service_account_id": account or "sa", "api_keys": []}}
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=answer)

    with CountProvider(BASE, transport=httpx.MockTransport(handler), retry=POLICY,
                       sleep=lambda _: None) as provider:
        actions: list[Callable[[Secret], object]] = [
            provider.whoami, lambda s: provider.list_keys(account, s),
            lambda s: provider.create_key(account, name, s),
            lambda s: provider.delete_key(account, key_id, s)]
        for action in actions:
            if not bearer:
                with pytest.raises(ValueError):   # Secret refuses an empty value
                    action(Secret(bearer))
                continue
            try:
                action(Secret(bearer))
            except UsageError:
                assert not (account and key_id)
            except Unauthorized as exc:
                assert not (bearer.isascii() and bearer.isprintable())
                if len(bearer) > 3 and not any(bearer in x for x in (account, key_id, name)):
                    assert_clean(exc, bearer)
    for request in seen:                   # one path segment each, never a traversal
        assert request.url.host == "count.test"
        assert request.url.raw_path.startswith(b"/v1/")
        segments = request.url.raw_path.split(b"/")
        assert b".." not in segments and b"." not in segments
        assert len(segments) in (3, 5, 6)
        value = request.headers["authorization"].removeprefix("Bearer ")
        assert value == bearer and bearer.isascii() and bearer.isprintable()


# --- a whole rotation against an in-memory Count that answers one call with garbage -------------

REF = SecretRef("secret", "count/app", "api_key")
ADMIN_ACCOUNT = "sa_admin"
_KEYS_PATH = re.compile(r"/v1/service-accounts/(?P<sa>[^/]+)/api-keys")
_KEY_PATH = re.compile(r"/v1/service-accounts/(?P<sa>[^/]+)/api-keys/(?P<key_id>[^/]+)")


@dataclass
class _Key:
    key_id: str
    account: str
    name: str
    secret: str
    created_at: datetime
    live_at: datetime


class MiniCount:
    """docs/count-api.md in memory: whoami, list, create, delete; envelopes as the
    emulator writes them (``rotator.emulator.envelope``); admin or self authorization."""

    def __init__(self, clock: FakeClock, key_limit: int, propagation: float) -> None:
        self.clock, self.key_limit, self.propagation = clock, key_limit, propagation
        self.keys: dict[str, _Key] = {}
        self.secrets: list[str] = []      # every secret ever issued
        self.roles = {ADMIN_ACCOUNT: "admin", ACCOUNT: "member"}
        self._ids = itertools.count(1)

    def seed(self, account: str) -> Secret:
        return Secret(self._make(account, "seed", live=True).secret)

    def _make(self, account: str, name: str, live: bool = False) -> _Key:
        now = self.clock.now()
        key = _Key(f"key_{next(self._ids):04d}", account, name, "cnt_" + secrets.token_hex(20),
                   now, now if live else now + timedelta(seconds=self.propagation))
        self.keys[key.key_id] = key
        self.secrets.append(key.secret)
        return key

    def authenticate(self, bearer: str) -> _Key | None:
        key = next((k for k in self.keys.values() if k.secret == bearer), None)
        return key if key is not None and self.clock.now() >= key.live_at else None

    def account_keys(self, account: str = ACCOUNT) -> set[str]:
        return {k.key_id for k in self.keys.values() if k.account == account}

    # -- HTTP -----------------------------------------------------------------------------
    def _reply(self, status: int, payload: dict[str, Any]) -> httpx.Response:
        rid = f"req_{next(self._ids):06d}"
        body = {"success": status < 400, "request_id": rid, **payload}
        return httpx.Response(status, json=body, headers={"X-Request-Id": rid})

    def _ok(self, result: dict[str, Any], status: int = 200) -> httpx.Response:
        return self._reply(status, {"result": result})

    def _error(self, status: int, code: str, message: str) -> httpx.Response:
        return self._reply(status, {"error": {"code": code, "message": message}})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        caller = self.authenticate(bearer)
        if caller is None:
            return self._error(401, "unauthorized", "invalid API key")
        path, method = request.url.path, request.method
        if path == "/v1/whoami" and method == "GET":
            return self._ok({"service_account_id": caller.account, "key_id": caller.key_id})
        match = _KEY_PATH.fullmatch(path) or _KEYS_PATH.fullmatch(path)
        if match is None:
            return self._error(404, "not_found", "no such endpoint")
        account = match["sa"]
        if account not in self.roles:
            return self._error(404, "service_account_not_found", "no such account")
        if caller.account != account and self.roles[caller.account] != "admin":
            return self._error(403, "forbidden", "not allowed")
        if "key_id" in match.groupdict() and method == "DELETE":
            key = self.keys.get(match["key_id"])
            if key is None or key.account != account:
                return self._error(404, "key_not_found", "no such key")
            del self.keys[key.key_id]
            return self._ok({"key_id": key.key_id, "deleted": True})
        if method == "GET":
            return self._ok({"api_keys": [
                {"key_id": k.key_id, "name": k.name, "last_used_at": None,
                 "created_at": k.created_at.isoformat().replace("+00:00", "Z")}
                for k in self.keys.values() if k.account == account]})
        if method == "POST":
            if len(self.account_keys(account)) >= self.key_limit:
                return self._error(409, "key_limit_reached", "too many keys")
            name = json.loads(request.content)["name"]
            key = self._make(account, name)
            return self._ok({"key_id": key.key_id, "name": key.name, "api_key": key.secret,
                             "created_at": key.created_at.isoformat().replace("+00:00", "Z")},
                            status=201)
        return self._error(405, "method_not_allowed", "no")


def call_name(request: httpx.Request) -> str:
    if request.url.path.endswith("/whoami"):
        return "whoami"
    if request.method == "POST":
        return "create_key"
    return "delete_key" if request.method == "DELETE" else "list_keys"


@dataclass
class Fault:
    """Answer the ``skip``-th and the next ``times - 1`` calls named ``call`` with
    ``reply``; ``performed``: the real call happens first and its answer is lost."""

    call: str
    reply: Reply
    skip: int
    times: float          # math.inf: always
    performed: bool


@dataclass
class FaultyCount:
    count: MiniCount
    fault: Fault | None
    seen: dict[str, int] = field(default_factory=dict)
    injected: int = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        name = call_name(request)
        n = self.seen[name] = self.seen.get(name, 0) + 1
        fault = self.fault
        if fault is None or name != fault.call or not (
                fault.skip < n <= fault.skip + fault.times):
            return self.count(request)
        self.injected += 1
        if fault.performed:
            self.count(request)
        return fault.reply.respond(request)


@st.composite
def garbage(draw: st.DrawFn, call: str, performed: bool) -> Reply:
    """An answer that is wrong, never a well-formed lie: a 2xx body never parses as the
    contract's value, and "key not found" is said only of a key the call did delete."""
    reply = draw(replies(call))
    if reply.raises is not None or reply.broken == "stream":
        return reply
    if 200 <= reply.status < 300:
        body = draw(st.sampled_from([
            b"", b"<html>ok</html>", b"[]", b'{"success": true}', b'{"success": false}',
            b'{"success": true, "result": []}', b"x" * (2 * MAX_BODY_BYTES),
            json.dumps({"success": True, "result": draw(_broken_result(call))}).encode()]))
        return Reply(reply.status, body, reply.headers, reply.broken)
    if code_of(reply.body) == "key_not_found" and not performed:
        return Reply(reply.status, b"", reply.headers, reply.broken)
    return reply


@st.composite
def _broken_result(draw: st.DrawFn, call: str) -> dict[str, Any]:
    if call == "delete_key":   # the wrong key, or not deleted
        return draw(st.sampled_from([{"key_id": "key_9999", "deleted": True},
                                     {"key_id": KEY_ID, "deleted": False}, {"deleted": True}]))
    result: dict[str, Any] = draw(_results(call))
    if call == "list_keys":
        result = {"api_keys": [{"key_id": KEY_ID, "name": "", "created_at": T0}]}
    victim = result["api_keys"][0] if call == "list_keys" else result
    victim[draw(st.sampled_from(sorted(victim)))] = draw(st.sampled_from([None, 7, [], {}]))
    return result


@st.composite
def faults(draw: st.DrawFn) -> Fault:
    call = draw(st.sampled_from(["create_key", "whoami", "delete_key", "list_keys"]))
    performed = call in ("create_key", "delete_key") and draw(st.booleans())
    return Fault(call, draw(garbage(call, performed)), draw(st.integers(0, 2)),
                 draw(st.sampled_from([1, 2, 3, math.inf])), performed)


class World:
    def __init__(self, *, self_mode: bool, key_limit: int, propagation: float) -> None:
        self.clock = FakeClock()
        self.count = MiniCount(self.clock, key_limit, propagation)
        self.store, self.repo = FakeStore(), MemoryRepository()
        self.admin = None if self_mode else self.count.seed(ADMIN_ACCOUNT)
        self.first = self.count.seed(ACCOUNT)
        self.store.put(REF, self.first)
        self.spec = TargetSpec(name="app", provider="count", service_account=ACCOUNT, ref=REF,
                               grace_seconds=30, probe_timeout=20, probe_interval=1,
                               management_key=self.admin)
        self.transport = FaultyCount(self.count, None)
        self.provider = CountProvider(BASE, transport=httpx.MockTransport(self.transport),
                                      retry=POLICY, sleep=lambda _: None)

    def runner(self, holder: str) -> Runner:
        return Runner(providers={"count": self.provider}, store=self.store, repo=self.repo,
                      clock=self.clock, holder=holder, lease_ttl=60, rollback_retry_delay=1)

    def served(self) -> _Key | None:
        return self.count.authenticate(self.store.current(REF).reveal())

    def assert_consistent(self) -> None:
        key = self.served()
        assert key is not None and key.account == ACCOUNT      # Vault's key authenticates
        assert self.count.account_keys() == {key.key_id}       # and no other key is left
        closed = {e.op_id for e in self.repo.recorded if e.kind is EventKind.OUTCOME}
        intents = [e for e in self.repo.recorded if e.kind is EventKind.INTENT]
        assert all(e.op_id in closed for e in intents)
        assert not self.repo.cleanups
        assert self.repo.running_rotation("app") is None


@settings(FUZZ, max_examples=120)
@given(fault=faults(), self_mode=st.booleans(), key_limit=st.sampled_from([2, 3]),
       propagation=st.sampled_from([0.0, 3.0]))
@example(fault=Fault("create_key", Reply(500), 0, 1, performed=True), self_mode=False,
         key_limit=3, propagation=0.0)
@example(fault=Fault("list_keys", Reply(200, b"<html>"), 0, math.inf, performed=False),
         self_mode=False, key_limit=2, propagation=0.0)
@example(fault=Fault("whoami", Reply(raises=httpx.ReadTimeout), 1, math.inf, performed=False),
         self_mode=True, key_limit=2, propagation=3.0)
@example(fault=Fault("delete_key", Reply(503), 0, math.inf, performed=True), self_mode=False,
         key_limit=2, propagation=0.0)
def test_garbage_from_one_call_never_leaves_a_half_done_rotation(
        fault: Fault, self_mode: bool, key_limit: int, propagation: float) -> None:
    w = World(self_mode=self_mode, key_limit=key_limit, propagation=propagation)
    w.transport.fault = fault
    with w.provider, structlog.testing.capture_logs() as logs:
        try:
            first = w.runner("h1").rotate(w.spec).rotation
        except RotatorError:   # classified; nothing else may escape
            first = None
        event(f"{fault.call}: first run {first.status.value if first else 'raised'}"
              f"{'' if first is None or first.is_terminal else ' at ' + first.step.value}"
              f", {w.transport.injected} garbage answer(s)")
        if first is not None:
            assert first.is_terminal or first.step is Step.ROLLBACK, first
            served = w.store.current(REF)
            if first.status is Status.COMPLETED:
                assert served != w.first and w.served() is not None
            elif first.status in (Status.ROLLED_BACK, Status.FAILED):
                assert served == w.first      # Vault holds the key it had before

        # The fault clears; the next runs finish what is left and clean up what was queued.
        w.transport.fault = None
        w.clock.sleep(120)
        for holder in ("h2", "h3"):
            if w.repo.running_rotation("app") is None:
                break
            assert w.runner(holder).rotate(w.spec).rotation.is_terminal
        queued = len(w.repo.cleanups)
        if queued:
            assert w.runner("h4").cleanup(w.spec) == (queued, 0)
        w.assert_consistent()
        again = w.runner("h5").rotate(w.spec).rotation   # and the target still rotates
        assert again.status is Status.COMPLETED, again.reason
        w.assert_consistent()
    dump = repr([asdict(e) for e in w.repo.recorded]) + repr(w.repo.by_id) + repr(logs)
    assert not [s for s in w.count.secrets if s in dump]


def test_a_retried_create_whose_first_answer_was_lost_leaves_no_key() -> None:
    w = World(self_mode=False, key_limit=3, propagation=0.0)
    w.transport.fault = Fault("create_key", Reply(502, b"<html>Bad Gateway</html>"), 0, 1,
                              performed=True)
    with w.provider, structlog.testing.capture_logs():
        rot = w.runner("h1").rotate(w.spec).rotation
        assert rot.status is Status.COMPLETED
        assert len(w.count.account_keys()) == 1, [
            (k.key_id, k.name) for k in w.count.keys.values() if k.account == ACCOUNT]
