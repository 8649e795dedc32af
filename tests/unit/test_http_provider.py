"""The generic HTTP provider over ``httpx.MockTransport``: what it sends for each call, and
what each answer means, through the alt layout's definition (the integration tests drive
the same definition against the real emulator)."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Iterator

import httpx
import pytest

from rotator.adapters.http_provider import HttpProvider
from rotator.config.http_provider import HttpProviderConfig
from rotator.config.retry import RetryPolicy
from rotator.core.errors import KeyLimitReached, KeyNotFound, ProtocolError, Unauthorized
from rotator.core.ports import KeyProvider
from rotator.core.secret import Secret
from tests.fixtures.emulator import ALT_SHAPE

ADMIN = Secret("adm_0123456789abcdefghijklmnop")
T0 = "2026-12-01T10:00:00Z"
Reply = Callable[[httpx.Request], httpx.Response]


def _config() -> HttpProviderConfig:
    text = ('type = "http"\nbase_url = "https://api.alt.example"\n'
            'management_key_env = "ALT_KEY"\n' + ALT_SHAPE.replace("[providers.alt.", "["))
    return HttpProviderConfig.model_validate(
        {**tomllib.loads(text), "retry": RetryPolicy(max_attempts=3, base_delay=0.0)})


class Rig:
    def __init__(self, replies: list[Reply]) -> None:
        self.replies, self.sent, self.sleeps = iter(replies), list[httpx.Request](), list[float]()
        self.clock = 1000.0     # monotonic seconds: moved on by the provider's sleeps only
        self.provider = HttpProvider("alt", _config(), sleep=self._sleep,
                                     monotonic=lambda: self.clock,
                                     transport=httpx.MockTransport(self._answer))

    def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock += seconds

    def _answer(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return next(self.replies)(request)


def answer(status: int, body: object = None, **headers: str) -> Reply:
    content = b"" if body is None else json.dumps(body).encode()
    return lambda _request: httpx.Response(status, content=content, headers=headers)


def error(status: int, code: str, title: str = "refused", **headers: str) -> Reply:
    return answer(status, {"errors": [{"code": code, "title": title}],
                           "meta": {"trace": "t-9"}}, **headers)


@pytest.fixture
def rig() -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(*replies: Reply) -> Rig:
        made.append(Rig(list(replies)))
        return made[-1]
    yield make
    for r in made:
        r.provider.close()


def test_create_sends_the_configured_request_and_reads_the_pointers(
        rig: Callable[..., Rig]) -> None:
    r = rig(answer(200, {"data": {"credential": {
        "id": "k-2", "label": 'rot "1" {x}', "token": "tok_new_0123456789abcdef",
        "issued": T0}}, "meta": {"trace": "t-1"}}))
    port: KeyProvider = r.provider
    key = port.create_key("sa/1", 'rot "1" {x}', ADMIN)
    (sent,) = r.sent
    assert (sent.method, sent.url.raw_path) == ("POST", b"/api/2/accounts/sa%2F1/credentials")
    assert sent.headers["X-Auth-Token"] == f"Key {ADMIN.reveal()}"
    assert "Authorization" not in sent.headers
    # The name is a JSON string value, braces and quotes included: never spliced as text.
    assert json.loads(sent.content) == {"credential": {"label": 'rot "1" {x}'}}
    assert (key.key_id, key.name, key.secret.reveal(), key.request_id) == (
        "k-2", 'rot "1" {x}', "tok_new_0123456789abcdef", "t-1")
    assert key.created_at is not None and key.created_at.isoformat().startswith("2026-12-01")


def test_list_reads_each_item_and_a_missing_field_names_its_pointer(
        rig: Callable[..., Rig]) -> None:
    items = [{"id": "k-1", "label": "initial", "issued": T0, "last_seen": None},
             {"id": "k-2", "label": "", "issued": T0, "last_seen": T0}]
    r = rig(answer(200, {"data": {"credentials": items}}),
            answer(200, {"data": {"credentials": [{"id": "k-1", "label": "x"}]}}))
    listing = r.provider.list_keys("sa_1", ADMIN)
    assert [(k.key_id, k.last_used_at is None) for k in listing.keys] == [
        ("k-1", True), ("k-2", False)]
    with pytest.raises(ProtocolError) as info:
        r.provider.list_keys("sa_1", ADMIN)
    assert "'/data/credentials/0/issued'" in str(info.value)


def test_delete_gone_only_with_the_configured_code(rig: Callable[..., Rig]) -> None:
    r = rig(answer(204), error(404, "credential_not_found"), error(404, "not_found"))
    assert not r.provider.delete_key("sa_1", "k-1", ADMIN).already_gone
    assert r.sent[0].method == "DELETE"
    assert r.provider.delete_key("sa_1", "k-1", ADMIN).already_gone
    with pytest.raises(KeyNotFound):     # no such account is not "deleted before"
        r.provider.delete_key("sa_1", "k-1", ADMIN)


def test_status_table_key_limit_retries_and_an_unexpected_2xx(
        rig: Callable[..., Rig]) -> None:
    r = rig(error(409, "quota_exceeded"),
            error(503, "unavailable"), error(429, "throttled", **{"Retry-After": "2"}),
            answer(200, {"data": {"account": "sa_1", "credential": "k-1"}}),
            answer(201, {}), answer(302, None, Location="https://elsewhere.example/"))
    with pytest.raises(KeyLimitReached):
        r.provider.create_key("sa_1", "rot-1", ADMIN)
    assert r.provider.whoami(ADMIN).key_id == "k-1"
    assert 2.0 in r.sleeps               # the 429's Retry-After, in the header named
    with pytest.raises(ProtocolError, match="answered 201, where the config expects 200"):
        r.provider.whoami(ADMIN)
    # The shared guard hands a redirect back unread: never followed, with the key, elsewhere.
    with pytest.raises(ProtocolError, match=r"alt answered a redirect \(302\), never followed"):
        r.provider.whoami(ADMIN)
    assert len(r.sent) == 6 and {req.url.host for req in r.sent} == {"api.alt.example"}


def test_error_message_is_kept_only_as_plain_text(rig: Callable[..., Rig]) -> None:
    echoed = f"bad key {ADMIN.reveal()}"
    r = rig(error(401, "unauthenticated", "invalid API key"),
            error(401, "unauthenticated", echoed),
            error(401, "unauthenticated", "token tok_abcdefghijklmnopqrstuvwxyz0123 refused"))
    with pytest.raises(Unauthorized) as plain:
        r.provider.whoami(ADMIN)
    assert plain.value.context["detail"] == "invalid API key"
    for _ in range(2):
        with pytest.raises(Unauthorized) as hidden:
            r.provider.whoami(ADMIN)
        assert "detail" not in hidden.value.context
        assert ADMIN.reveal() not in str(hidden.value)


def test_the_rate_limit_headers_named_pace_the_next_request(rig: Callable[..., Rig]) -> None:
    who = {"data": {"account": "sa_1", "credential": "k-1"}}
    r = rig(answer(200, who, **{"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "3",
                                "X-RateLimit-Limit": "5"}),
            answer(200, who))
    r.provider.whoami(ADMIN)
    assert r.sleeps == []
    r.provider.whoami(ADMIN)
    assert r.sleeps == [3.0]             # until X-RateLimit-Reset, then the request goes
