"""The Count provider against ``httpx.MockTransport``: wire format, errors, retries, hygiene.

No network and no real sleeping: every provider gets a recording no-op ``sleep``.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import certifi
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotator.adapters.count import client as count
from rotator.adapters.count.client import CallRecord, CountProvider
from rotator.config.provider import CountPaths
from rotator.config.retry import RetryPolicy
from rotator.core.errors import (
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
from rotator.core.model import KeyRecord
from rotator.core.ports import Deletion, Identity, KeyProvider
from rotator.core.secret import Secret
from rotator.emulator import Emulator
from tests.support import all_at_once, exception_chain

BASE = "https://count.test"
ADMIN_VALUE = "ck_admin_S3CRET_do_not_leak_0001"
SELF_VALUE = "ck_self_S3CRET_do_not_leak_0002"
NEW_VALUE = "ck_new_S3CRET_do_not_leak_0003"
ADMIN, SELF = Secret(ADMIN_VALUE), Secret(SELF_VALUE)
SECRETS = (ADMIN_VALUE, SELF_VALUE, NEW_VALUE)
POLICY = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0, max_elapsed=1e6,
                     max_retry_after=120.0)
T0 = "2024-05-01T12:00:00Z"

Handler = Callable[[httpx.Request], httpx.Response]


def ok(result: dict[str, Any], status: int = 200, rid: str = "req-ok",
       headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"success": True, "request_id": rid, "result": result},
                          headers=headers)


def fail(status: int, code: str, rid: str = "req-err",
         headers: dict[str, str] | None = None) -> httpx.Response:
    # The message echoes the bearer, as a careless server might: it must never surface.
    body = {"success": False, "request_id": rid,
            "error": {"code": code, "message": f"bad key {ADMIN_VALUE} {SELF_VALUE}"}}
    return httpx.Response(status, json=body, headers=headers)


def html(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    page = f"<html><body>{status} Bad Gateway {ADMIN_VALUE}</body></html>"
    return httpx.Response(status, text=page, headers={"Content-Type": "text/html",
                                                      **(headers or {})})


@dataclass
class Server:
    """Answers requests from a script (responses or exceptions), recording each request."""

    script: list[httpx.Response | Exception | Handler]
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Exception):
            raise step
        return step if isinstance(step, httpx.Response) else step(request)


@dataclass
class Rig:
    server: Server
    provider: CountProvider
    sleeps: list[float]
    calls: list[CallRecord]


@pytest.fixture
def rig() -> Iterator[Callable[..., Rig]]:
    made: list[CountProvider] = []

    def make(*script: httpx.Response | Exception | Handler, policy: RetryPolicy = POLICY,
             **kwargs: Any) -> Rig:
        server = Server(list(script))
        sleeps: list[float] = []
        calls: list[CallRecord] = []
        clock = [1000.0]   # monotonic seconds, moved on by each sleep

        def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            clock[0] += seconds

        provider = CountProvider(BASE, transport=httpx.MockTransport(server), retry=policy,
                                 sleep=sleep, monotonic=lambda: clock[0],
                                 on_call=calls.append, **kwargs)
        made.append(provider)
        return Rig(server, provider, sleeps, calls)

    yield make
    for provider in made:
        provider.close()


def test_public_api() -> None:
    assert set(count.__all__) == {"MAX_BODY_BYTES", "CallRecord", "CountProvider"}


def test_satisfies_the_key_provider_port() -> None:
    with CountProvider(BASE, transport=httpx.MockTransport(Server([ok({})]))) as provider:
        port: KeyProvider = provider
        assert port is provider
    assert provider._session._client.is_closed


# --- happy paths ----------------------------------------------------------------------------

def test_list_keys_parses_timestamps(rig: Callable[..., Rig]) -> None:
    r = rig(ok({"api_keys": [
        {"key_id": "k1", "name": "rot-1", "created_at": T0, "last_used_at": None},
        {"key_id": "k2", "name": "", "created_at": "2024-05-01T14:00:00.250+02:00",
         "last_used_at": "2024-05-02T00:00:00Z"},
    ]}, rid="req-list"))
    listing = r.provider.list_keys("sa-1", ADMIN)
    assert listing.request_id == "req-list"
    assert list(listing.keys) == [
        KeyRecord("k1", "rot-1", datetime(2024, 5, 1, 12, tzinfo=UTC), None),
        KeyRecord("k2", "", datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC),
                  datetime(2024, 5, 2, tzinfo=UTC)),
    ]
    assert all(k.created_at is not None and k.created_at.tzinfo is UTC for k in listing.keys)
    assert r.server.requests[0].url.path == "/v1/service-accounts/sa-1/api-keys"


def test_create_key_wraps_the_secret(rig: Callable[..., Rig]) -> None:
    r = rig(ok({"key_id": "k3", "name": "rot-42", "api_key": NEW_VALUE, "created_at": T0},
               status=201, rid="req-new"))
    new = r.provider.create_key("sa-1", "rot-42", ADMIN)
    assert (new.key_id, new.name, new.request_id) == ("k3", "rot-42", "req-new")
    assert new.created_at == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert isinstance(new.secret, Secret)
    assert new.secret.reveal() == NEW_VALUE
    assert NEW_VALUE not in repr(new)
    (request,) = r.server.requests
    assert request.method == "POST"
    assert request.url.path == "/v1/service-accounts/sa-1/api-keys"
    assert json.loads(request.content) == {"name": "rot-42"}
    assert request.headers["content-type"] == "application/json"


def test_create_key_says_whether_its_first_attempt_was_the_one_answered(
        rig: Callable[..., Rig]) -> None:
    """Only then can no lost answer have made another key (the engine lists again if not)."""
    created = ok({"key_id": "k3", "name": "rot-42", "api_key": NEW_VALUE, "created_at": T0},
                 status=201)
    assert rig(created).provider.create_key("sa-1", "rot-42", ADMIN).first_attempt
    retried = rig(fail(503, "unavailable"), created)
    assert not retried.provider.create_key("sa-1", "rot-42", ADMIN).first_attempt
    assert len(retried.server.requests) == 2


def test_delete_key(rig: Callable[..., Rig]) -> None:
    r = rig(ok({"key_id": "k1", "deleted": True}, rid="req-del"))
    assert r.provider.delete_key("sa-1", "k1", ADMIN) == Deletion("k1", False, "req-del")
    (request,) = r.server.requests
    assert (request.method, request.url.path) == (
        "DELETE", "/v1/service-accounts/sa-1/api-keys/k1")


def test_delete_404_key_not_found_is_already_gone(rig: Callable[..., Rig]) -> None:
    r = rig(fail(404, "key_not_found", rid="req-gone"))
    assert r.provider.delete_key("sa-1", "k1", ADMIN) == Deletion("k1", True, "req-gone")
    assert [c.outcome for c in r.calls] == ["ok"]


@pytest.mark.parametrize("answer", [fail(404, "service_account_not_found"), html(404)])
def test_delete_other_404_is_key_not_found(rig: Callable[..., Rig],
                                           answer: httpx.Response) -> None:
    # Only the contract's key_not_found proves the key is gone; a proxy's 404 does not.
    r = rig(answer)
    with pytest.raises(KeyNotFound):
        r.provider.delete_key("sa-1", "k1", ADMIN)


def test_whoami(rig: Callable[..., Rig]) -> None:
    r = rig(ok({"service_account_id": "sa-1", "key_id": "k3"}, rid="req-who"))
    assert r.provider.whoami(Secret(NEW_VALUE)) == Identity("sa-1", "k3", "req-who")
    (request,) = r.server.requests
    assert request.url.path == "/v1/whoami"
    assert request.headers["authorization"] == f"Bearer {NEW_VALUE}"


@pytest.mark.parametrize("auth", [ADMIN, SELF], ids=["admin", "self"])
def test_the_bearer_sent_is_the_auth_given(rig: Callable[..., Rig], auth: Secret) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return ok({"key_id": "k9", "name": "n", "api_key": NEW_VALUE, "created_at": T0},
                      status=201)
        if request.method == "DELETE":
            return ok({"key_id": "k1", "deleted": True})
        if request.url.path.endswith("api-keys"):
            return ok({"api_keys": []})
        return ok({"service_account_id": "sa-1", "key_id": "k1"})

    r = rig(answer, user_agent="rotator-test/9")
    r.provider.list_keys("sa-1", auth)
    r.provider.create_key("sa-1", "n", auth)
    r.provider.delete_key("sa-1", "k1", auth)
    r.provider.whoami(auth)
    assert len(r.server.requests) == 4
    for request in r.server.requests:
        assert request.headers["authorization"] == f"Bearer {auth.reveal()}"
        assert request.headers["user-agent"] == "rotator-test/9"
        assert request.extensions["timeout"] == httpx.Timeout(10.0).as_dict()


def test_timeout_is_applied_to_every_request(rig: Callable[..., Rig]) -> None:
    r = rig(ok({"api_keys": []}), timeout=2.5)
    r.provider.list_keys("sa-1", ADMIN)
    assert r.server.requests[0].extensions["timeout"] == {
        "connect": 2.5, "read": 2.5, "write": 2.5, "pool": 2.5}


def test_path_parameters_are_quoted(rig: Callable[..., Rig]) -> None:
    r = rig(ok({"key_id": "k/1 ?", "deleted": True}), ok({"api_keys": []}))
    r.provider.delete_key("team/a b", "k/1 ?", ADMIN)
    r.provider.list_keys("..", ADMIN)
    assert r.server.requests[0].url.raw_path == (
        b"/v1/service-accounts/team%2Fa%20b/api-keys/k%2F1%20%3F")
    assert r.server.requests[1].url.raw_path == b"/v1/service-accounts/%2E%2E/api-keys"


def test_paths_can_be_overridden(rig: Callable[..., Rig]) -> None:
    paths = CountPaths(api_keys="/api/v2/accounts/{service_account}/keys",
                       whoami="/api/v2/me")
    r = rig(ok({"api_keys": []}), ok({"service_account_id": "a", "key_id": "k"}), paths=paths)
    r.provider.list_keys("sa-1", ADMIN)
    r.provider.whoami(ADMIN)
    assert [q.url.path for q in r.server.requests] == ["/api/v2/accounts/sa-1/keys", "/api/v2/me"]


@pytest.mark.parametrize("overrides", [
    {"api_key": "/v1/keys/{key}"}, {"whoami": "v1/whoami"}, {"api_keys": "/v1/{"},
])
def test_bad_path_templates_are_config_errors(overrides: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as caught:
        CountPaths(**overrides)
    assert caught.value.context["key"] == f"paths.{next(iter(overrides))}"


def test_empty_identifiers_are_refused(rig: Callable[..., Rig]) -> None:
    r = rig(ok({}))
    with pytest.raises(UsageError):
        r.provider.delete_key("sa-1", "", ADMIN)
    assert r.server.requests == []


def test_verify_accepts_a_ca_bundle_and_rejects_a_missing_one() -> None:
    CountProvider(BASE, verify=certifi.where()).close()
    CountProvider(BASE, verify=False).close()
    with pytest.raises(ConfigError) as caught:
        CountProvider(BASE, verify="/nonexistent/ca.pem")
    assert caught.value.context["path"] == "/nonexistent/ca.pem"


# --- classification ---------------------------------------------------------------------------

TRANSIENT_ANSWERS = [
    pytest.param(lambda: fail(500, "internal"), ProviderUnavailable, id="500"),
    pytest.param(lambda: html(502), ProviderUnavailable, id="502-html"),
    pytest.param(lambda: fail(503, "unavailable"), ProviderUnavailable, id="503"),
    pytest.param(lambda: httpx.Response(504), ProviderUnavailable, id="504-empty"),
    pytest.param(lambda: fail(408, "timeout"), ProviderUnavailable, id="408"),
    pytest.param(lambda: fail(409, "conflict"), ProviderUnavailable, id="409-other"),
    pytest.param(lambda: fail(429, "rate_limited"), RateLimited, id="429"),
]
PERMANENT_ANSWERS = [
    pytest.param(lambda: fail(401, "unauthorized"), Unauthorized, id="401"),
    pytest.param(lambda: fail(403, "forbidden"), Unauthorized, id="403"),
    pytest.param(lambda: fail(404, "not_found"), KeyNotFound, id="404"),
    pytest.param(lambda: fail(409, "key_limit_reached"), KeyLimitReached, id="409-limit"),
    pytest.param(lambda: fail(400, "invalid_name"), ProviderError, id="400"),
    pytest.param(lambda: html(422), ProviderError, id="422-html"),
    pytest.param(lambda: httpx.Response(302, headers={"Location": "/x"}), ProtocolError,
                 id="302"),
]
TRANSPORT_FAILURES = [
    pytest.param(lambda: httpx.ConnectTimeout("connect timed out"), id="connect-timeout"),
    pytest.param(lambda: httpx.ReadTimeout("read timed out"), id="read-timeout"),
    pytest.param(lambda: httpx.ConnectError("connection refused"), id="connect-error"),
    pytest.param(lambda: httpx.RemoteProtocolError("peer closed"), id="protocol-error"),
    pytest.param(lambda: httpx.ProxyError("proxy said no"), id="proxy-error"),
]


@pytest.mark.parametrize(("answer", "kind"), TRANSIENT_ANSWERS)
def test_transient_answers_are_retried(rig: Callable[..., Rig],
                                       answer: Callable[[], httpx.Response],
                                       kind: type[TransientError]) -> None:
    r = rig(answer())
    with pytest.raises(kind) as caught:
        r.provider.create_key("sa-1", "rot-1", ADMIN)
    assert len(r.server.requests) == POLICY.max_attempts
    assert caught.value.context["attempts"] == str(POLICY.max_attempts)
    assert caught.value.context["call"] == "create_key"
    assert caught.value.context["service_account"] == "sa-1"
    assert caught.value.context["status"] == str(r.calls[-1].status)
    assert [c.outcome for c in r.calls] == ["transient"] * POLICY.max_attempts
    assert [c.attempt for c in r.calls] == [1, 2, 3]


@pytest.mark.parametrize(("answer", "kind"), PERMANENT_ANSWERS)
def test_permanent_answers_are_not_retried(rig: Callable[..., Rig],
                                           answer: Callable[[], httpx.Response],
                                           kind: type[RotatorError]) -> None:
    r = rig(answer())
    with pytest.raises(kind) as caught:
        r.provider.delete_key("sa-1", "k1", ADMIN)
    assert len(r.server.requests) == 1
    assert r.sleeps == []
    context = caught.value.context
    assert (context["call"], context["service_account"], context["key_id"]) == (
        "delete_key", "sa-1", "k1")
    assert context["status"] == str(r.calls[0].status)
    assert [c.outcome for c in r.calls] == ["permanent"]


def test_error_context_carries_request_id_and_code(rig: Callable[..., Rig]) -> None:
    r = rig(fail(409, "key_limit_reached", rid="req-full"))
    with pytest.raises(KeyLimitReached) as caught:
        r.provider.create_key("sa-1", "rot-1", ADMIN)
    assert caught.value.context == {
        "call": "create_key", "service_account": "sa-1", "status": "409",
        "request_id": "req-full", "code": "key_limit_reached"}


def test_request_id_falls_back_to_the_header(rig: Callable[..., Rig]) -> None:
    r = rig(html(403, headers={"X-Request-Id": "hdr-123"}))
    with pytest.raises(Unauthorized) as caught:
        r.provider.whoami(ADMIN)
    assert caught.value.context["request_id"] == "hdr-123"
    assert r.calls[0].request_id == "hdr-123"


@pytest.mark.parametrize("status", [401, 403])
def test_whoami_refused_is_unauthorized(rig: Callable[..., Rig], status: int) -> None:
    r = rig(fail(status, "invalid_key"))
    with pytest.raises(Unauthorized):
        r.provider.whoami(Secret(NEW_VALUE))


@pytest.mark.parametrize("failure", TRANSPORT_FAILURES)
def test_transport_failures_are_unavailable(rig: Callable[..., Rig],
                                            failure: Callable[[], Exception]) -> None:
    r = rig(failure())
    with pytest.raises(ProviderUnavailable) as caught:
        r.provider.list_keys("sa-1", ADMIN)
    exc = caught.value
    assert exc.__cause__ is None and exc.__context__ is None and exc.__suppress_context__
    assert exc.context["error"] == type(failure()).__name__
    assert len(r.server.requests) == POLICY.max_attempts
    assert [(c.status, c.outcome) for c in r.calls] == [(None, "transient")] * 3


def test_html_502_is_retried_then_succeeds(rig: Callable[..., Rig]) -> None:
    r = rig(html(502), ok({"service_account_id": "sa-1", "key_id": "k1"}))
    assert r.provider.whoami(ADMIN).key_id == "k1"
    assert len(r.sleeps) == 1
    assert [(c.call, c.method, c.status, c.attempt, c.outcome) for c in r.calls] == [
        ("whoami", "GET", 502, 1, "transient"), ("whoami", "GET", 200, 2, "ok")]
    assert all(c.duration_seconds >= 0 for c in r.calls)


# --- rate limits ------------------------------------------------------------------------------

def _in(seconds: int) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


@pytest.mark.parametrize(("headers", "expected"), [
    pytest.param(lambda: {"Retry-After": "7"}, 7.0, id="retry-after-delta"),
    pytest.param(lambda: {"Retry-After": format_datetime(_in(30), usegmt=True)}, 30.0,
                 id="retry-after-http-date"),
    pytest.param(lambda: {"RateLimit-Reset": str(int(_in(12).timestamp()))}, 12.0,
                 id="ratelimit-reset-epoch"),
    pytest.param(lambda: {"Retry-After": "soon", "RateLimit-Reset": "5"}, 5.0,
                 id="garbage-retry-after-falls-back"),
    pytest.param(lambda: {"Retry-After": "3600"}, 120.0, id="capped-by-policy"),
])
def test_429_waits_as_the_server_asks(rig: Callable[..., Rig],
                                      headers: Callable[[], dict[str, str]],
                                      expected: float) -> None:
    r = rig(fail(429, "rate_limited", headers=headers()), ok({"api_keys": []}))
    r.provider.list_keys("sa-1", ADMIN)
    (slept,) = r.sleeps
    assert slept == pytest.approx(expected, abs=1.5)


def test_dates_and_epochs_are_measured_on_the_injected_clock(rig: Callable[..., Rig]) -> None:
    then = datetime(2030, 1, 1, tzinfo=UTC)   # far from the machine's own time
    r = rig(fail(429, "rate_limited", headers={
                "Retry-After": format_datetime(then + timedelta(seconds=30), usegmt=True)}),
            ok({"api_keys": []}, headers=_exhausted(str(int(then.timestamp()) + 12))),
            ok({"api_keys": []}), now=lambda: then)
    r.provider.list_keys("sa-1", ADMIN)      # the 429, retried after its Retry-After date
    r.provider.list_keys("sa-1", ADMIN)      # waits for the window's RateLimit-Reset epoch
    assert r.sleeps == [30.0, pytest.approx(12.0, abs=0.5)]


def test_429_carries_retry_after_when_the_budget_runs_out(rig: Callable[..., Rig]) -> None:
    r = rig(fail(429, "rate_limited", headers={"Retry-After": "2"}))
    with pytest.raises(RateLimited) as caught:
        r.provider.list_keys("sa-1", ADMIN)
    assert caught.value.retry_after == 2.0
    assert caught.value.context["attempts"] == "3"
    assert r.sleeps == [2.0, 2.0]


def _exhausted(reset: str) -> dict[str, str]:
    return {"RateLimit-Limit": "10", "RateLimit-Remaining": "0", "RateLimit-Reset": reset}


def test_remaining_zero_delays_the_next_request_of_that_bearer(rig: Callable[..., Rig]) -> None:
    r = rig(ok({"api_keys": []}, headers=_exhausted("4")),
            ok({"service_account_id": "sa-1", "key_id": "k2"}), ok({"api_keys": []}))
    r.provider.list_keys("sa-1", ADMIN)
    assert r.sleeps == []
    assert set(r.provider._session._pacer._windows) == {ADMIN.fingerprint}   # never the raw key
    r.provider.whoami(SELF)             # another bearer has its own window
    assert r.sleeps == []
    r.provider.list_keys("sa-1", ADMIN)
    (slept,) = r.sleeps
    assert slept == pytest.approx(4.0, abs=0.5)
    r.provider.list_keys("sa-1", ADMIN)  # the window was waited out once; no second wait
    assert len(r.sleeps) == 1


def test_remaining_zero_wait_is_capped(rig: Callable[..., Rig]) -> None:
    r = rig(ok({"api_keys": []}, headers=_exhausted(str(int(_in(86400).timestamp())))),
            ok({"api_keys": []}))
    r.provider.list_keys("sa-1", ADMIN)
    r.provider.list_keys("sa-1", ADMIN)
    assert r.sleeps == [pytest.approx(POLICY.max_retry_after, abs=0.5)]


def test_remaining_above_zero_does_not_wait(rig: Callable[..., Rig]) -> None:
    headers = {"RateLimit-Limit": "10", "RateLimit-Remaining": "1", "RateLimit-Reset": "9"}
    r = rig(ok({"api_keys": []}, headers=headers))
    r.provider.list_keys("sa-1", ADMIN)
    r.provider.list_keys("sa-1", ADMIN)
    assert r.sleeps == []


# --- protocol errors -------------------------------------------------------------------------

KEY = {"key_id": "k1", "name": "n", "created_at": T0, "last_used_at": None}


def _envelope(result: Any) -> dict[str, Any]:
    return {"success": True, "request_id": "r", "result": result}


@pytest.mark.parametrize(("body", "field_name"), [
    pytest.param(b"<html>oops</html>", None, id="not-json"),
    pytest.param(b"[1, 2]", None, id="not-an-object"),
    pytest.param({"success": False, "result": {"api_keys": []}}, None, id="success-false"),
    pytest.param({"success": "true", "result": {"api_keys": []}}, None, id="success-string"),
    pytest.param({"success": True}, None, id="no-result"),
    pytest.param(_envelope([]), None, id="result-not-object"),
    pytest.param(_envelope({}), "result.api_keys", id="missing-list"),
    pytest.param(_envelope({"api_keys": {}}), "result.api_keys", id="list-not-list"),
    pytest.param(_envelope({"api_keys": [3]}), "result.api_keys", id="item-not-object"),
    pytest.param(_envelope({"api_keys": [{**KEY, "key_id": 7}]}), "result.api_keys[0].key_id",
                 id="id-not-string"),
    pytest.param(_envelope({"api_keys": [{**KEY, "name": None}]}), "result.api_keys[0].name",
                 id="name-null"),
    pytest.param(_envelope({"api_keys": [KEY, {**KEY, "created_at": "yesterday"}]}),
                 "result.api_keys[1].created_at", id="bad-timestamp"),
    pytest.param(_envelope({"api_keys": [{**KEY, "created_at": "2024-05-01T12:00:00"}]}),
                 "result.api_keys[0].created_at", id="naive-timestamp"),
    pytest.param(_envelope({"api_keys": [{**KEY, "created_at": None}]}),
                 "result.api_keys[0].created_at", id="null-created-at"),
    pytest.param(_envelope({"api_keys": [{**KEY, "last_used_at": 5}]}),
                 "result.api_keys[0].last_used_at", id="bad-last-used"),
    pytest.param(b'{"success": true, "result": {"api_keys": []}, "pad": "'
                 + b"x" * count.MAX_BODY_BYTES + b'"}', None, id="huge-body"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, None, id="deep-nesting"),
])
def test_malformed_2xx_is_a_protocol_error(rig: Callable[..., Rig], body: Any,
                                           field_name: str | None) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = rig(httpx.Response(200, content=content))
    with pytest.raises(ProtocolError) as caught:
        r.provider.list_keys("sa-1", ADMIN)
    assert caught.value.context["call"] == "list_keys"
    assert caught.value.context.get("field") == field_name
    if field_name:
        assert field_name in str(caught.value)
    assert len(r.server.requests) == 1
    assert [c.outcome for c in r.calls] == ["permanent"]


@pytest.mark.parametrize(("result", "field_name"), [
    ({"key_id": "k1", "name": "n", "created_at": T0}, "result.api_key"),
    ({"key_id": "k1", "name": "n", "api_key": "", "created_at": T0}, "result.api_key"),
    ({"key_id": "k1", "name": "n", "api_key": 12345, "created_at": T0}, "result.api_key"),
    ({"name": "n", "api_key": NEW_VALUE, "created_at": T0}, "result.key_id"),
    ({"key_id": "k1", "name": "n", "api_key": NEW_VALUE}, "result.created_at"),
])
def test_malformed_create_names_the_field(rig: Callable[..., Rig], result: dict[str, Any],
                                          field_name: str) -> None:
    r = rig(ok(result, status=201))
    with pytest.raises(ProtocolError) as caught:
        r.provider.create_key("sa-1", "n", ADMIN)
    assert caught.value.context["field"] == field_name
    assert NEW_VALUE not in str(caught.value)


@pytest.mark.parametrize("result", [
    {"key_id": "k1", "deleted": False}, {"key_id": "other", "deleted": True}, {"key_id": "k1"},
])
def test_malformed_delete_is_a_protocol_error(rig: Callable[..., Rig],
                                              result: dict[str, Any]) -> None:
    r = rig(ok(result))
    with pytest.raises(ProtocolError):
        r.provider.delete_key("sa-1", "k1", ADMIN)


def test_huge_error_body_is_still_classified(rig: Callable[..., Rig]) -> None:
    r = rig(httpx.Response(503, content=b"x" * (count.MAX_BODY_BYTES + 10)))
    with pytest.raises(ProviderUnavailable):
        r.provider.whoami(ADMIN)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
    | st.sampled_from(["k1", T0, "2024-05-01T12:00:00", NEW_VALUE, ADMIN_VALUE]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(
        ["success", "result", "request_id", "error", "code", "service_accounts", "id", "name",
         "role", "api_keys", "key_id", "created_at", "last_used_at", "api_key", "deleted",
         "service_account_id", "x"]), children, max_size=6),
    max_leaves=20,
)
bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    json_values.map(lambda v: json.dumps(_envelope(v)).encode()),
    st.binary(max_size=64),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies, status=st.sampled_from([200, 201, 200, 404, 409, 429, 500]),
       call=st.sampled_from(["list", "create", "delete", "whoami"]))
def test_random_bodies_succeed_or_raise_rotator_errors(body: bytes, status: int,
                                                       call: str) -> None:
    server = Server([httpx.Response(status, content=body)])
    policy = RetryPolicy(max_attempts=1)
    with CountProvider(BASE, transport=httpx.MockTransport(server), retry=policy,
                       sleep=lambda _: None) as provider:
        actions: dict[str, Callable[[], object]] = {
            "list": lambda: provider.list_keys("sa-1", ADMIN),
            "create": lambda: provider.create_key("sa-1", "n", ADMIN),
            "delete": lambda: provider.delete_key("sa-1", "k1", ADMIN),
            "whoami": lambda: provider.whoami(ADMIN),
        }
        try:
            actions[call]()
        except RotatorError as exc:
            _assert_clean(exc, (ADMIN_VALUE,))   # the body may hold other strings
            if 200 <= status < 300:
                assert isinstance(exc, ProtocolError)


# --- secret hygiene ---------------------------------------------------------------------------



def _assert_clean(exc: BaseException, secrets: tuple[str, ...] = SECRETS) -> None:
    text = "".join(traceback.format_exception(exc))
    for item in exception_chain(exc):
        rendered = [str(item), repr(item), repr(item.args), repr(vars(item))]
        for secret in secrets:
            assert not any(secret in part for part in rendered), type(item)
    for secret in secrets:
        assert secret not in text
    assert exc.__cause__ is None
    assert exc.__context__ is None
    assert not any(isinstance(item, httpx.HTTPError) for item in exception_chain(exc))


def _echoing(request: httpx.Request) -> httpx.Response:
    """A hostile server: echoes the bearer as request id (body and header) and error code."""
    bearer = request.headers["authorization"].removeprefix("Bearer ")
    body = {"success": False, "request_id": bearer, "error": {"code": bearer,
                                                              "message": bearer}}
    return httpx.Response(403, json=body, headers={"X-Request-Id": bearer})


def _echoing_header(request: httpx.Request) -> httpx.Response:
    bearer = request.headers["authorization"].removeprefix("Bearer ")
    return httpx.Response(500, text=f"<p>{bearer}</p>", headers={"X-Request-Id": bearer})


ERROR_SCRIPTS = [
    *[pytest.param(p.values[0], id=p.id) for p in TRANSIENT_ANSWERS + PERMANENT_ANSWERS],
    *[pytest.param(p.values[0], id=p.id) for p in TRANSPORT_FAILURES],
    pytest.param(lambda: httpx.Response(200, text=f"not json {ADMIN_VALUE}"), id="non-json"),
    pytest.param(lambda: ok({"service_account_id": ADMIN_VALUE}), id="missing-field"),
    pytest.param(lambda: _echoing, id="echoing-server"),
    pytest.param(lambda: _echoing_header, id="echoing-header"),
]


@pytest.mark.parametrize("step", ERROR_SCRIPTS)
@pytest.mark.parametrize("auth", [ADMIN, SELF], ids=["admin", "self"])
def test_no_error_path_leaks_the_bearer(rig: Callable[..., Rig], auth: Secret,
                                        step: Callable[[], Any]) -> None:
    r = rig(step())
    calls: list[Callable[[], object]] = [
        lambda: r.provider.list_keys("sa-1", auth),
        lambda: r.provider.create_key("sa-1", "n", auth),
        lambda: r.provider.delete_key("sa-1", "k1", auth),
        lambda: r.provider.whoami(auth),
    ]
    for action in calls:
        with pytest.raises(RotatorError) as caught:
            action()
        _assert_clean(caught.value)
        assert auth.reveal() not in " ".join(caught.value.context.values())
    assert not any(auth.reveal() in repr(record) for record in r.calls)


@pytest.mark.parametrize("value", ["line\nbreak-S3CRET", "caf\u00e9-S3CRET", "tab\t-S3CRET"])
def test_a_bearer_that_is_no_header_value_is_refused_cleanly(rig: Callable[..., Rig],
                                                             value: str) -> None:
    r = rig(ok({}))
    with pytest.raises(Unauthorized) as caught:
        r.provider.whoami(Secret(value))
    assert "S3CRET" not in "".join(traceback.format_exception(caught.value))
    assert r.server.requests == []


def test_error_raised_inside_an_except_block_has_no_foreign_context(
        rig: Callable[..., Rig]) -> None:
    r = rig(httpx.ConnectError("refused"))
    try:
        raise ValueError("an unrelated error being handled by the caller")
    except ValueError:
        with pytest.raises(ProviderUnavailable) as caught:
            r.provider.whoami(ADMIN)
    assert caught.value.__suppress_context__
    assert caught.value.__cause__ is None


@pytest.mark.parametrize("reset_format", ["delta", "epoch", "http-date"])
def test_a_429_from_a_real_server_is_waited_out_in_each_reset_format(
        make_emulator: Callable[..., Emulator], reset_format: str) -> None:
    """Another client of the same key spent the window (a second replica, say): this one's
    first request is a 429, waited out as Retry-After says, however it says it. Epoch
    seconds read as a delta asked for 56 years, and the call gave up at its first 429."""
    emu = make_emulator(rate_limit=2, rate_window=2.0, reset_format=reset_format)
    account = emu.seed_account("svc")
    key = Secret(account.secret)
    policy = RetryPolicy(max_attempts=3, max_elapsed=10.0, max_retry_after=5.0)
    calls: list[CallRecord] = []
    with CountProvider(emu.url, retry=policy) as other, CountProvider(
            emu.url, retry=policy, on_call=calls.append) as provider:
        for _ in range(2):
            other.whoami(key)
        started = time.monotonic()
        assert provider.whoami(key).service_account_id == account.account_id
        waited = time.monotonic() - started
    assert [(c.status, c.attempt) for c in calls] == [(429, 1), (200, 2)]
    assert 0.0 < waited < 4.0


def test_threads_sharing_a_key_spend_each_window_whole_and_never_storm_a_real_server(
        make_emulator: Callable[..., Emulator]) -> None:
    """Eight workers on one bearer, a limit of 5 a second: one budget for all of them, so
    each window takes 5 and no request goes into a spent window (workers that each waited
    only on their own answers all went at the reset: a 429 apiece beyond the fifth)."""
    emu = make_emulator(rate_limit=5, rate_window=1.0)
    account = emu.seed_account("svc")
    key = Secret(account.secret)
    policy = RetryPolicy(max_attempts=5, max_elapsed=30.0, max_retry_after=5.0)
    calls: list[CallRecord] = []
    with CountProvider(emu.url, retry=policy, on_call=calls.append) as provider:
        provider.whoami(key)                 # the window, learnt before the rush

        def work() -> None:
            for _ in range(3):
                provider.whoami(key)

        began = time.monotonic()
        failures = all_at_once(8, work)
        took = time.monotonic() - began
    assert failures == []
    # None is seen here; the bound is the one rotator promises (one per window at most,
    # for a reset that came in later than the headers said on a loaded machine). Without
    # the shared budget: 22.
    limited = [c.status for c in calls].count(429)
    assert limited <= 5, [c.status for c in calls]
    assert emu.state.counters().faults.get("rate_limited", 0) == limited
    # 25 requests at 5 a window: the rush's 24 spent 4 more windows after the first.
    assert took >= 3.0, took
