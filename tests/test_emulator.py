"""The Count emulator over real HTTP: every endpoint, every fault knob, the CLI."""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import io
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import rotator.emulator
from rotator.emulator import Emulator, EmulatorSettings, SeededAccount
from rotator.emulator.cli import TOKEN_ENV, add_arguments, main, run
from rotator.emulator.control import TOKEN_HEADER
from rotator.emulator.faults import FaultInjector
from tests.fixtures.emulator import MakeEmulator, start_emulator

ROOT = Path(__file__).resolve().parents[1]
KEY_ID = re.compile(r"key_[0-9a-f]{16}")
SECRET = re.compile(r"cnt_[0-9A-Za-z]{40}")
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
CONTROL_TOKEN = re.compile(TOKEN_HEADER + r": (\S+)")


# Plain HTTP, but httpx builds a TLS context per client (50 ms): share one.
_TLS = ssl.create_default_context()


def client(url: str, timeout: float = 5.0, control_token: str | None = None) -> httpx.Client:
    headers = {TOKEN_HEADER: control_token} if control_token else {}
    return httpx.Client(base_url=url, timeout=timeout, verify=_TLS, headers=headers)


def printed_token(text: str) -> str:
    match = CONTROL_TOKEN.search(text)
    assert match, text
    return match.group(1)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def keys_path(account_id: str) -> str:
    return f"/v1/service-accounts/{account_id}/api-keys"


def ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is True
    assert body["request_id"].startswith("req_")
    assert response.headers["X-Request-Id"] == body["request_id"]
    assert isinstance(body["result"], dict)
    return body["result"]


def error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert response.headers["X-Request-Id"] == body["request_id"]
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)


@pytest.fixture
def http(emulator: Emulator) -> Iterator[httpx.Client]:
    with client(emulator.url, timeout=5, control_token=emulator.control_token) as http_client:
        yield http_client


@pytest.fixture
def member(emulator: Emulator) -> SeededAccount:
    return emulator.seed_account("billing-export")


# --- the public API --------------------------------------------------------------------

def test_public_api() -> None:
    assert sorted(rotator.emulator.__all__) == ["Emulator", "EmulatorSettings", "SeededAccount"]
    seeded = SeededAccount("sa_1", "n", "member", "key_1", "cnt_secret")
    assert "cnt_secret" not in repr(seeded)


@pytest.mark.parametrize("bad", [
    {"key_limit": -1}, {"latency": -0.1}, {"error_rate": 1.5}, {"rate_429": -0.5},
    {"rate_limit": 1.5}, {"rate_window": 0}, {"reset_format": "iso"},
    {"propagation_delay": float("inf")}, {"revoke_delay": -1.0}, {"seed": "x"},
    {"key_limit": True},
])
def test_settings_are_validated(bad: dict[str, object]) -> None:
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        EmulatorSettings(**bad)  # type: ignore[arg-type]


def test_settings_changed_rejects_unknown_names() -> None:
    assert EmulatorSettings().changed({"latency": 1}).latency == 1.0
    with pytest.raises(ValueError, match="bogus"):
        EmulatorSettings().changed({"bogus": 1})


def test_fault_rng_is_seeded() -> None:
    settings = EmulatorSettings(error_rate=0.5, seed=7)
    first, second = FaultInjector(7), FaultInjector(7)
    assert ([first.roll_5xx(settings) for _ in range(50)]
            == [second.roll_5xx(settings) for _ in range(50)])


# --- the endpoints ---------------------------------------------------------------------

def test_list_service_accounts(http: httpx.Client, emulator_admin: SeededAccount,
                               member: SeededAccount) -> None:
    result = ok(http.get("/v1/service-accounts", headers=bearer(emulator_admin.secret)))
    assert result["service_accounts"] == [
        {"id": emulator_admin.account_id, "name": "admin", "role": "admin"},
        {"id": member.account_id, "name": "billing-export", "role": "member"},
    ]
    assert emulator_admin.account_id.startswith("sa_")
    # A member key sees its own account only.
    result = ok(http.get("/v1/service-accounts", headers=bearer(member.secret)))
    assert [a["id"] for a in result["service_accounts"]] == [member.account_id]


def test_create_list_whoami_delete(http: httpx.Client, emulator: Emulator,
                                   emulator_admin: SeededAccount,
                                   member: SeededAccount) -> None:
    admin = bearer(emulator_admin.secret)
    created = ok(http.post(keys_path(member.account_id), json={"name": "rot-1"},
                           headers=admin), status=201)
    assert set(created) == {"key_id", "name", "api_key", "created_at"}
    assert KEY_ID.fullmatch(created["key_id"])
    assert SECRET.fullmatch(created["api_key"])
    assert RFC3339.fullmatch(created["created_at"])
    assert created["name"] == "rot-1"

    listed = http.get(keys_path(member.account_id), headers=admin)
    keys = ok(listed)["api_keys"]
    assert [k["key_id"] for k in keys] == [member.key_id, created["key_id"]]
    assert all(set(k) == {"key_id", "name", "created_at", "last_used_at"} for k in keys)
    assert keys[1]["last_used_at"] is None
    assert created["api_key"] not in listed.text and member.secret not in listed.text

    who = ok(http.get("/v1/whoami", headers=bearer(created["api_key"])))
    assert who == {"service_account_id": member.account_id, "key_id": created["key_id"]}
    keys = ok(http.get(keys_path(member.account_id), headers=admin))["api_keys"]
    assert RFC3339.fullmatch(keys[1]["last_used_at"])

    deleted = ok(http.delete(f"{keys_path(member.account_id)}/{member.key_id}", headers=admin))
    assert deleted == {"key_id": member.key_id, "deleted": True}
    keys = ok(http.get(keys_path(member.account_id), headers=admin))["api_keys"]
    assert [k["key_id"] for k in keys] == [created["key_id"]]
    # Revoked immediately and for good.
    error(http.get("/v1/whoami", headers=bearer(member.secret)), 401, "unauthorized")

    counters = emulator.state.counters()
    assert counters.creates == {member.account_id: 1}
    assert counters.deletes == {member.account_id: 1}
    assert counters.requests == 7
    assert emulator.state.issued_secrets() == [
        emulator_admin.secret, member.secret, created["api_key"]]


def test_key_limit(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(key_limit=2)
    acct = emu.seed_account("svc")
    with client(emu.url) as http:
        ok(http.post(keys_path(acct.account_id), json={"name": "second"},
                     headers=bearer(acct.secret)), status=201)
        third = http.post(keys_path(acct.account_id), json={"name": "third"},
                          headers=bearer(acct.secret))
        error(third, 409, "key_limit_reached")
        # Deleting one frees a slot.
        ok(http.delete(f"{keys_path(acct.account_id)}/{acct.key_id}",
                       headers=bearer(emu.state.issued_secrets()[-1])))
        ok(http.post(keys_path(acct.account_id), json={"name": "third"},
                     headers=bearer(emu.state.issued_secrets()[-1])), status=201)


def test_delete_twice_and_unknown_key(http: httpx.Client, emulator_admin: SeededAccount,
                                      member: SeededAccount) -> None:
    admin = bearer(emulator_admin.secret)
    path = f"{keys_path(member.account_id)}/{member.key_id}"
    ok(http.delete(path, headers=admin))
    error(http.delete(path, headers=admin), 404, "key_not_found")
    error(http.delete(f"{keys_path(member.account_id)}/key_0000000000000000", headers=admin),
          404, "key_not_found")
    # A key of another account is not found under this one.
    wrong = f"{keys_path(member.account_id)}/{emulator_admin.key_id}"
    error(http.delete(wrong, headers=admin), 404, "key_not_found")


def test_authentication(http: httpx.Client, emulator_admin: SeededAccount) -> None:
    error(http.get("/v1/whoami"), 401, "unauthorized")
    error(http.get("/v1/whoami", headers=bearer("cnt_" + "x" * 40)), 401, "unauthorized")
    error(http.get("/v1/whoami", headers={"Authorization": emulator_admin.secret}),
          401, "unauthorized")
    error(http.get("/v1/service-accounts"), 401, "unauthorized")
    error(http.get(keys_path(emulator_admin.account_id)), 401, "unauthorized")
    ok(http.get("/v1/whoami", headers={"Authorization": f"bearer {emulator_admin.secret}"}))


def test_unknown_account_path_and_method(http: httpx.Client,
                                         emulator_admin: SeededAccount) -> None:
    admin = bearer(emulator_admin.secret)
    error(http.get(keys_path("sa_nope"), headers=admin), 404, "not_found")
    error(http.post(keys_path("sa_nope"), json={"name": "x"}, headers=admin), 404, "not_found")
    error(http.get("/v1/nothing", headers=admin), 404, "not_found")
    error(http.put("/v1/whoami", headers=admin), 405, "method_not_allowed")


def test_authorization_admin_self_and_forbidden(http: httpx.Client,
                                                emulator: Emulator,
                                                emulator_admin: SeededAccount,
                                                member: SeededAccount) -> None:
    other = emulator.seed_account("ci-deployer")
    # admin mode: an admin account's key manages any account.
    ok(http.get(keys_path(other.account_id), headers=bearer(emulator_admin.secret)))
    ok(http.post(keys_path(other.account_id), json={"name": "by-admin"},
                 headers=bearer(emulator_admin.secret)), status=201)
    # self mode: an account's own key manages its own keys, itself included.
    new = ok(http.post(keys_path(member.account_id), json={"name": "by-self"},
                       headers=bearer(member.secret)), status=201)
    ok(http.delete(f"{keys_path(member.account_id)}/{member.key_id}",
                   headers=bearer(new["api_key"])))
    # A member's key may not touch another account, nor an admin's.
    for account in (other, emulator_admin):
        error(http.get(keys_path(account.account_id), headers=bearer(new["api_key"])),
              403, "forbidden")
        error(http.post(keys_path(account.account_id), json={"name": "x"},
                        headers=bearer(new["api_key"])), 403, "forbidden")
        error(http.delete(f"{keys_path(account.account_id)}/{account.key_id}",
                          headers=bearer(new["api_key"])), 403, "forbidden")


@pytest.mark.parametrize("body", [
    {}, {"name": ""}, {"name": 7}, {"name": None}, {"name": "x" * 101}, [], "name",
])
def test_create_validates_the_name(http: httpx.Client, member: SeededAccount,
                                   body: object) -> None:
    response = http.post(keys_path(member.account_id), json=body, headers=bearer(member.secret))
    error(response, 400, "invalid_request")


def test_create_accepts_100_characters_and_rejects_bad_json(http: httpx.Client,
                                                           member: SeededAccount) -> None:
    path, auth = keys_path(member.account_id), bearer(member.secret)
    ok(http.post(path, json={"name": "x" * 100}, headers=auth), status=201)
    error(http.post(path, content=b"{not json", headers=auth), 400, "invalid_request")


# --- the fault knobs -------------------------------------------------------------------

def test_propagation_delay(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(propagation_delay=0.3)
    acct = emu.seed_account("svc")
    with client(emu.url) as http:
        # The seeded key works at once; a new one only after the delay.
        ok(http.get("/v1/whoami", headers=bearer(acct.secret)))
        new = ok(http.post(keys_path(acct.account_id), json={"name": "n"},
                           headers=bearer(acct.secret)), status=201)
        error(http.get("/v1/whoami", headers=bearer(new["api_key"])), 401, "unauthorized")
        error(http.get(keys_path(acct.account_id), headers=bearer(new["api_key"])),
              401, "unauthorized")
        time.sleep(0.35)
        assert ok(http.get("/v1/whoami", headers=bearer(new["api_key"])))["key_id"] == (
            new["key_id"])


def _created_and_deleted(http: httpx.Client, acct: SeededAccount) -> dict[str, Any]:
    """A key of ``acct`` created and deleted through the API: its create answer."""
    new: dict[str, Any] = ok(http.post(keys_path(acct.account_id), json={"name": "n"},
                                       headers=bearer(acct.secret)), status=201)
    ok(http.delete(f"{keys_path(acct.account_id)}/{new['key_id']}",
                   headers=bearer(acct.secret)))
    return new


def test_revoke_delay_keeps_a_deleted_key_authenticating_for_a_while(
        make_emulator: MakeEmulator) -> None:
    emu = make_emulator(revoke_delay=0.3)
    acct = emu.seed_account("svc")
    with client(emu.url) as http:
        new = _created_and_deleted(http, acct)
        # Gone from the listing at once, but it still authenticates until the delay is over.
        listed = ok(http.get(keys_path(acct.account_id), headers=bearer(acct.secret)))
        assert new["key_id"] not in {k["key_id"] for k in listed["api_keys"]}
        assert ok(http.get("/v1/whoami", headers=bearer(new["api_key"])))["key_id"] == (
            new["key_id"])
        time.sleep(0.35)
        error(http.get("/v1/whoami", headers=bearer(new["api_key"])), 401, "unauthorized")


def test_a_deleted_key_is_refused_at_once_by_default(make_emulator: MakeEmulator) -> None:
    emu = make_emulator()
    acct = emu.seed_account("svc")
    with client(emu.url) as http:
        new = _created_and_deleted(http, acct)
        error(http.get("/v1/whoami", headers=bearer(new["api_key"])), 401, "unauthorized")


@pytest.mark.parametrize("reset_format", ["delta", "epoch", "http-date"])
def test_random_429_retry_after_formats(make_emulator: MakeEmulator, reset_format: str) -> None:
    emu = make_emulator(rate_429=1.0, rate_window=30.0, reset_format=reset_format)
    acct = emu.seed_account("svc")
    with client(emu.url) as http:
        before = time.time()
        response = http.get("/v1/whoami", headers=bearer(acct.secret))
    error(response, 429, "rate_limited")
    value = response.headers["Retry-After"]
    if reset_format == "delta":
        assert value == "30"
    elif reset_format == "epoch":
        assert before + 29 <= int(value) <= time.time() + 31
    else:
        assert value.endswith(" GMT")
        moment = email.utils.parsedate_to_datetime(value).timestamp()
        assert before + 29 <= moment <= time.time() + 31
    assert "RateLimit-Limit" not in response.headers  # no fixed limit configured
    assert emu.state.counters().faults == {"rate_429": 1}


@pytest.mark.parametrize("reset_format", ["delta", "epoch", "http-date"])
def test_fixed_window_limit_headers(make_emulator: MakeEmulator, reset_format: str) -> None:
    emu = make_emulator(rate_limit=3, rate_window=30.0, reset_format=reset_format)
    acct = emu.seed_account("svc")
    with client(emu.url) as http:
        responses = [http.get("/v1/whoami", headers=bearer(acct.secret)) for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert [r.headers["RateLimit-Limit"] for r in responses] == ["3"] * 4
    assert [r.headers["RateLimit-Remaining"] for r in responses] == ["2", "1", "0", "0"]
    limited = responses[-1]
    error(limited, 429, "rate_limited")
    reset, retry = limited.headers["RateLimit-Reset"], limited.headers["Retry-After"]
    now = time.time()
    if reset_format == "delta":
        assert 29 <= int(reset) <= 30 and 29 <= int(retry) <= 30
    else:
        assert now + 28 <= int(reset) <= now + 31
        if reset_format == "epoch":
            assert retry == reset
        else:
            assert email.utils.parsedate_to_datetime(retry).timestamp() == int(reset)
    assert emu.state.counters().faults == {"rate_limited": 1}


def test_fixed_window_is_per_key_and_resets(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(rate_limit=2, rate_window=0.4)
    one, two = emu.seed_account("one"), emu.seed_account("two")
    with client(emu.url) as http:
        codes = [http.get("/v1/whoami", headers=bearer(one.secret)).status_code
                 for _ in range(3)]
        assert codes == [200, 200, 429]
        # Another key has its own window; so do unauthenticated callers.
        assert http.get("/v1/whoami", headers=bearer(two.secret)).status_code == 200
        assert http.get("/v1/whoami").status_code == 401
        time.sleep(0.45)
        response = http.get("/v1/whoami", headers=bearer(one.secret))
        assert response.status_code == 200
        assert response.headers["RateLimit-Remaining"] == "1"


def test_no_ratelimit_headers_when_unlimited(http: httpx.Client,
                                             emulator_admin: SeededAccount) -> None:
    response = http.get("/v1/whoami", headers=bearer(emulator_admin.secret))
    assert not any(h.lower().startswith("ratelimit") for h in response.headers)


def test_random_5xx_html_and_json(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(error_rate=1.0, seed=1, rate_limit=100, rate_window=30.0)
    acct = emu.seed_account("svc")
    with client(emu.url) as http:
        responses = [http.get("/v1/whoami", headers=bearer(acct.secret)) for _ in range(30)]
    statuses = {r.status_code for r in responses}
    assert statuses <= {500, 502, 503} and 502 in statuses and statuses & {500, 503}
    for response in responses:
        assert response.headers["RateLimit-Limit"] == "100"
        if response.status_code == 502:
            assert response.headers["Content-Type"].startswith("text/html")
            assert "<html>" in response.text
            with pytest.raises(json.JSONDecodeError):
                response.json()
        else:
            error(response, response.status_code, response.json()["error"]["code"])
    faults = emu.state.counters().faults
    assert faults["error_html"] + faults["error_json"] == 30
    assert faults["error_html"] == sum(r.status_code == 502 for r in responses)
    # Injected errors happen before the handling: nothing was created or used.
    assert emu.state.keys(acct.account_id)[0].last_used_at is None


def test_error_rate_mixes_faults_with_success(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(error_rate=0.5, seed=3)
    acct = emu.seed_account("svc")
    with client(emu.url) as http:
        codes = [http.get("/v1/whoami", headers=bearer(acct.secret)).status_code
                 for _ in range(40)]
    assert 200 in codes and any(code >= 500 for code in codes)


def test_latency(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(latency=0.2)
    acct = emu.seed_account("svc")
    with client(emu.url, control_token=emu.control_token) as http:
        started = time.monotonic()
        ok(http.get("/v1/whoami", headers=bearer(acct.secret)))
        assert time.monotonic() - started >= 0.2
        started = time.monotonic()
        ok(http.get("/_emulator/state"))  # control endpoints are never slowed
        assert time.monotonic() - started < 0.2


def test_settings_change_at_runtime_from_python(emulator: Emulator, http: httpx.Client,
                                                emulator_admin: SeededAccount) -> None:
    emulator.settings = EmulatorSettings(rate_429=1.0)
    assert http.get("/v1/whoami", headers=bearer(emulator_admin.secret)).status_code == 429
    emulator.settings = EmulatorSettings()
    assert http.get("/v1/whoami", headers=bearer(emulator_admin.secret)).status_code == 200
    with pytest.raises(TypeError):
        emulator.settings = {"latency": 1}  # type: ignore[assignment]


# --- the control endpoints -------------------------------------------------------------

def test_control_state_has_no_secrets(http: httpx.Client, emulator: Emulator,
                                      emulator_admin: SeededAccount,
                                      member: SeededAccount) -> None:
    admin = bearer(emulator_admin.secret)
    new = ok(http.post(keys_path(member.account_id), json={"name": "n"}, headers=admin), 201)
    ok(http.delete(f"{keys_path(member.account_id)}/{member.key_id}", headers=admin))
    response = http.get("/_emulator/state")
    state = ok(response)
    for secret in emulator.state.issued_secrets():
        assert secret not in response.text
    accounts = {a["id"]: a for a in state["accounts"]}
    keys = {k["key_id"]: k for k in accounts[member.account_id]["keys"]}
    assert set(keys) == {member.key_id, new["key_id"]}
    assert RFC3339.fullmatch(keys[member.key_id]["deleted_at"])
    assert keys[new["key_id"]]["deleted_at"] is None
    assert state["counters"]["creates"] == {member.account_id: 1}
    assert state["counters"]["deletes"] == {member.account_id: 1}
    assert state["counters"]["requests"] == 2  # control calls are not counted
    assert state["settings"]["key_limit"] == 2


def test_control_faults(http: httpx.Client, emulator: Emulator) -> None:
    result = ok(http.post("/_emulator/faults", json={"key_limit": 5, "latency": 0,
                                                     "reset_format": "epoch"}))
    assert result["settings"]["key_limit"] == 5
    assert emulator.settings == EmulatorSettings(key_limit=5, reset_format="epoch")
    error(http.post("/_emulator/faults", json={"error_rate": 2}), 400, "invalid_request")
    error(http.post("/_emulator/faults", json={"nope": 1}), 400, "invalid_request")
    error(http.post("/_emulator/faults", json=[1]), 400, "invalid_request")
    assert emulator.settings.key_limit == 5
    error(http.get("/_emulator/nothing"), 404, "not_found")


def test_control_accounts(http: httpx.Client, emulator: Emulator) -> None:
    seeded = ok(http.post("/_emulator/accounts", json={"name": "ops", "role": "admin"}), 201)
    assert set(seeded) == {"account_id", "name", "role", "key_id", "api_key"}
    assert seeded["role"] == "admin" and SECRET.fullmatch(seeded["api_key"])
    who = ok(http.get("/v1/whoami", headers=bearer(seeded["api_key"])))
    assert who == {"service_account_id": seeded["account_id"], "key_id": seeded["key_id"]}
    member = ok(http.post("/_emulator/accounts", json={"name": "m"}), 201)
    assert member["role"] == "member"
    error(http.post("/_emulator/accounts", json={"name": "x", "role": "root"}),
          400, "invalid_request")
    error(http.post("/_emulator/accounts", json={}), 400, "invalid_request")


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/_emulator/state"), ("POST", "/_emulator/faults"), ("POST", "/_emulator/accounts"),
    ("GET", "/_emulator/nothing"),
])
def test_control_needs_the_token(emulator: Emulator, method: str, path: str) -> None:
    body = {"key_limit": 9} if path.endswith("faults") else {"name": "intruder"}
    with client(emulator.url) as anonymous:
        error(anonymous.request(method, path, json=body), 401, "unauthorized")
    with client(emulator.url, control_token=emulator.control_token + "x") as wrong:
        error(wrong.request(method, path, json=body), 403, "forbidden")
    assert emulator.settings.key_limit == EmulatorSettings().key_limit
    assert emulator.state.snapshot()["accounts"] == []
    with client(emulator.url, control_token=emulator.control_token) as right:
        if path.endswith("faults"):
            ok(right.post(path, json=body))
            assert emulator.settings.key_limit == 9
        elif path.endswith("accounts"):
            ok(right.post(path, json=body), 201)
        elif path.endswith("state"):
            ok(right.get(path))
        else:
            error(right.get(path), 404, "not_found")


def test_each_emulator_has_its_own_control_token(make_emulator: MakeEmulator) -> None:
    first, second = make_emulator(), make_emulator()
    assert len(first.control_token) >= 32 and first.control_token != second.control_token
    given = Emulator(control_token="chosen")
    assert given.control_token == "chosen"
    with pytest.raises(ValueError, match="empty"):
        Emulator(control_token=" ")


# --- lifecycle -------------------------------------------------------------------------

def test_stop_closes_keep_alive_connections_and_the_port() -> None:
    emu = start_emulator(latency=0.0)
    acct = emu.seed_account("svc")
    url = emu.url
    with client(url, timeout=2) as http:
        ok(http.get("/v1/whoami", headers=bearer(acct.secret)))  # leaves a pooled connection
        started = time.monotonic()
        emu.stop()
        assert time.monotonic() - started < 1.0
        emu.stop()  # idempotent
        with pytest.raises(httpx.TransportError):
            http.get("/v1/whoami", headers=bearer(acct.secret))
    assert not emu.running
    with pytest.raises(RuntimeError):
        _ = emu.url


def test_stop_interrupts_latency() -> None:
    emu = start_emulator(latency=5.0)
    acct = emu.seed_account("svc")
    outcome: list[object] = []

    def call() -> None:
        with client(emu.url, timeout=10) as http:
            try:
                outcome.append(http.get("/v1/whoami", headers=bearer(acct.secret)).status_code)
            except httpx.TransportError as exc:
                outcome.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.1)
    started = time.monotonic()
    emu.stop()
    thread.join(5)
    assert time.monotonic() - started < 2.0
    assert outcome


def test_concurrent_creates_respect_the_key_limit(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(key_limit=5)
    acct = emu.seed_account("svc")
    codes: list[int] = []

    def create() -> None:
        with client(emu.url) as http:
            codes.append(http.post(keys_path(acct.account_id), json={"name": "c"},
                                   headers=bearer(acct.secret)).status_code)

    threads = [threading.Thread(target=create) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(codes) == [201] * 4 + [409] * 6
    assert len(emu.state.keys(acct.account_id)) == 5


# --- the CLI ---------------------------------------------------------------------------

def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "rotator.emulator", *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_cli_serves_until_sigterm() -> None:
    with _cli("--port", "0", "--key-limit", "3", "--account", "ops:admin",
              "--account", "app") as proc:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(6)]
        match = re.search(r"http://127\.0\.0\.1:\d+", lines[0])
        assert match, lines
        url = match.group(0)
        table = {line.split()[0]: line.split() for line in lines[3:5]}
        assert set(table) == {"ops", "app"}
        _, role, account_id, key_id, secret = table["ops"]
        assert role == "admin" and KEY_ID.fullmatch(key_id) and SECRET.fullmatch(secret)
        with client(url, control_token=printed_token(lines[5])) as http:
            who = ok(http.get("/v1/whoami", headers=bearer(secret)))
            assert who == {"service_account_id": account_id, "key_id": key_id}
            assert ok(http.get("/_emulator/state"))["settings"]["key_limit"] == 3
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "stopped" in out


def test_cli_default_accounts_and_sigint() -> None:
    with _cli("--port", "0") as proc:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(6)]
        names = [line.split()[:2] for line in lines[3:6]]
        assert names == [["admin", "admin"], ["billing-export", "member"],
                         ["ci-deployer", "member"]]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err


@pytest.mark.parametrize(("args", "option"), [
    (["--latency", "-1"], "--latency"),
    (["--key-limit", "-3"], "--key-limit"),
    (["--error-rate", "1.5"], "--error-rate"),
    (["--rate-429", "nan"], "--rate-429"),
    (["--rate-window", "0"], "--rate-window"),
    (["--reset-format", "iso"], "--reset-format"),
    (["--account", "x:root"], "--account"),
    (["--port", "nope"], "--port"),
    (["--seed", "1.5"], "--seed"),
])
def test_cli_bad_option_returns_2(args: list[str], option: str,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    captured = capsys.readouterr()
    assert option in captured.err
    assert captured.out == ""


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "emulator.example"])
def test_cli_refuses_a_remote_host_without_allow_remote(host: str) -> None:
    with _cli("--port", "0", "--host", host) as proc:
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 2
    assert "--host" in err and "--allow-remote" in err and "loopback" in err
    assert out == ""


def test_cli_allow_remote_binds_any_address_and_takes_the_token_from_the_env() -> None:
    with _cli("--port", "0", "--host", "0.0.0.0", "--allow-remote",
              env={TOKEN_ENV: "shared-compose-token"}) as proc:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(7)]
        port = re.search(r"http://0\.0\.0\.0:(\d+)", lines[0])
        assert port, lines
        assert printed_token(lines[6]) == "shared-compose-token"
        url = f"http://127.0.0.1:{port.group(1)}"
        with client(url, control_token="shared-compose-token") as http:
            assert ok(http.get("/_emulator/state"))["settings"]["key_limit"] == 2
        with client(url) as http:
            error(http.get("/_emulator/state"), 401, "unauthorized")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err


def test_cli_bad_option_exits_2() -> None:
    with _cli("--port", "0", "--latency", "-1") as proc:
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 2
    assert "--latency" in err
    assert out == ""


@contextlib.contextmanager
def _run_in_thread(*argv: str) -> Iterator[tuple[str, str, list[int]]]:
    """``rotator emulator ARGV`` run in this process: its URL, what it printed, and (once
    stopped, after the block) its exit code."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--port", "0", *argv])
    stop, out, codes = threading.Event(), io.StringIO(), list[int]()
    thread = threading.Thread(target=lambda: codes.append(run(args, stop=stop, out=out)))
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while "Stop with" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        text = out.getvalue()
        url = re.search(r"http://127\.0\.0\.1:\d+", text)
        assert url, text
        yield url.group(0), text, codes
    finally:
        stop.set()
        thread.join(5)


def test_cli_run_in_process_until_stopped() -> None:
    with _run_in_thread("--account", "solo:admin", "--seed", "4") as (url, text, codes):
        assert "solo" in text and "seed 4" in text
        with client(url, control_token=printed_token(text)) as http:
            assert ok(http.get("/_emulator/state"))["settings"]["seed"] == 4
    assert codes == [0]


def _seeded_table(*args: str) -> dict[str, list[str]]:
    """The accounts a started ``rotator emulator`` prints (name -> row), then stopped."""
    with _cli("--port", "0", *args) as proc:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(6)]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    return {line.split()[0]: line.split() for line in lines[3:6]}


def test_cli_seed_makes_the_seeded_accounts_and_keys_the_same_at_every_start() -> None:
    first, again = _seeded_table("--seed", "7"), _seeded_table("--seed", "7")
    assert first == again          # a restart matches the config and Vault written before
    assert set(first) == {"admin", "billing-export", "ci-deployer"}
    other, unseeded = _seeded_table("--seed", "8"), _seeded_table()
    for name, row in first.items():
        account_id, key_id, secret = row[2:5]
        assert KEY_ID.fullmatch(key_id) and SECRET.fullmatch(secret)
        assert other[name][2:5] != [account_id, key_id, secret]
        assert unseeded[name][2:5] != [account_id, key_id, secret]


def test_keys_created_after_a_seeded_start_follow_the_same_sequence() -> None:
    made = []
    for _ in range(2):
        with Emulator(EmulatorSettings(), identity_seed=3) as emu:
            account = emu.seed_account("svc")
            with client(emu.url) as http:
                created = ok(http.post(keys_path(account.account_id),
                                       json={"name": "next"}, headers=bearer(account.secret)),
                             201)
            made.append((account.account_id, account.secret, created["key_id"],
                         created["api_key"]))
    assert made[0] == made[1]
    with Emulator(EmulatorSettings()) as a, Emulator(EmulatorSettings()) as b:
        assert a.seed_account("svc").secret != b.seed_account("svc").secret


def test_cli_layout_alt_serves_the_alt_paths_envelope_and_auth_only() -> None:
    with _run_in_thread("--account", "solo:admin", "--layout", "alt") as (url, text, codes):
        secret = SECRET.search(text)
        assert secret and "layout alt" in text
        alt = {"X-Auth-Token": f"Key {secret.group(0)}"}
        with client(url) as http:
            me = http.get("/api/2/me", headers=alt)
            account = me.json()["data"]["account"]
            created = http.post(f"/api/2/accounts/{account}/credentials", headers=alt,
                                json={"credential": {"label": "rot-1"}})
            key = created.json()["data"]["credential"]
            listed = http.get(f"/api/2/accounts/{account}/credentials", headers=alt)
            gone = http.delete(f"/api/2/accounts/{account}/credentials/{key['id']}",
                               headers=alt)
            again = http.delete(f"/api/2/accounts/{account}/credentials/{key['id']}",
                                headers=alt)
            count_way = http.get("/v1/whoami", headers=bearer(secret.group(0)))
            bearer_on_alt = http.get("/api/2/me", headers=bearer(secret.group(0)))
    assert codes == [0]
    assert me.status_code == 200 and me.headers["X-Trace-Id"] == me.json()["meta"]["trace"]
    assert created.status_code == 200 and SECRET.fullmatch(key["token"]) and key["issued"]
    assert [k["label"] for k in listed.json()["data"]["credentials"]] == ["initial", "rot-1"]
    assert "token" not in listed.text
    assert (gone.status_code, gone.content) == (204, b"")
    assert again.status_code == 404
    assert again.json()["errors"][0]["code"] == "credential_not_found"
    assert count_way.status_code == 404          # Count's paths are not served in alt
    assert bearer_on_alt.status_code == 401      # nor its Authorization: Bearer
