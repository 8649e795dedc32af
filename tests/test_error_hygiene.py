"""Secret hygiene of failing provider and Vault calls, without OpenBao or the emulator's server.

Every failure a Count or Vault call can meet (httpx and requests exceptions that carry
the request and its headers, servers and proxies that echo the credential back in a
body or a header, bodies that are not what the library expects) must surface as a
``RotatorError`` whose ``str``, ``repr``, ``args``, ``context``, exception chain and
formatted traceback hold no management key, issued key, Vault token or AppRole secret id,
and the log lines written about it (debug level, JSON and console) none either.

The secrets here are deliberately *not* shaped like Count keys or Vault tokens and are
never registered with ``remember_secret``: the log redactor's shape patterns cannot hide
a leak, so a leak can only be avoided at the adapters' boundary.
"""

from __future__ import annotations

import io
import json
import re
import socket
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import httpx
import pytest
import structlog

from rotator.adapters.count.client import CountProvider
from rotator.adapters.vault.store import AppRoleAuth, TokenAuth, VaultAuth, VaultStore
from rotator.config.retry import RetryPolicy
from rotator.core.errors import (
    ProtocolError,
    ProviderUnavailable,
    RotatorError,
    TransientError,
    VaultError,
    VaultUnavailable,
)
from rotator.core.model import Status
from rotator.core.ports import SecretRef
from rotator.core.secret import Secret
from rotator.core.target import TargetSpec
from rotator.devtools.devvault import free_port
from rotator.emulator import EmulatorSettings
from rotator.emulator.api import CountApi
from rotator.emulator.envelope import Request
from rotator.emulator.state import EmulatorState
from rotator.engine.runner import Runner
from rotator.logs import configure_logging
from tests.fakes import FakeClock, FakeStore, MemoryRepository
from tests.support import exception_chain, serving

MGMT = "mgmt-S3CRET-0f9e8d7c6b5a4930"          # the admin management key
NEW = "newkey-S3CRET-5566778899aabbcc"         # a key Count has just issued
VAULT_TOKEN = "vtok-S3CRET-1a2b3c4d5e6f7788"   # a Vault token
SECRET_ID = "sid-S3CRET-99887766554433"        # an AppRole secret id
ISSUED_TOKEN = "issued-S3CRET-aabbccddeeff0011"  # the token Vault hands out at login
ALL = (MGMT, NEW, VAULT_TOKEN, SECRET_ID, ISSUED_TOKEN)
# Any fragment of a secret long enough to matter: the shared marker of all of them.
MARKER = "S3CRET"

ONE_ATTEMPT = RetryPolicy(max_attempts=1)
TWO_FAST = RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0, max_elapsed=60.0)


# --- what "clean" means -----------------------------------------------------------------------



def _rendered(exc: BaseException) -> str:
    parts = ["".join(traceback.format_exception(exc))]
    for item in exception_chain(exc):
        parts += [str(item), repr(item), repr(item.args), repr(getattr(item, "__dict__", {}))]
        if isinstance(item, RotatorError):
            parts += [item.message, json.dumps(item.context)]
    return "\n".join(parts)


def _logged(exc: RotatorError, fmt: Literal["json", "console"]) -> str:
    """What rotator's logging writes about ``exc``: an error line and a traceback."""
    stream = io.StringIO()
    configure_logging(fmt=fmt, level="debug", stream=stream)
    log = structlog.get_logger("test.hygiene")
    log.debug("call_failed", failure=str(exc), failure_type=type(exc).__name__,
              context=exc.context)
    try:
        raise exc
    except RotatorError:
        log.exception("call_failed_with_traceback")
    return stream.getvalue()


def assert_clean(exc: BaseException, secrets: tuple[str, ...] = ALL) -> None:
    assert isinstance(exc, RotatorError), f"untranslated {type(exc).__name__}: {exc}"
    # Nothing foreign is chained: the library's exception (with its request) stays behind.
    assert [type(item) for item in exception_chain(exc)] == [type(exc)], list(exception_chain(exc))
    texts = {"exception": _rendered(exc), "json log": _logged(exc, "json"),
             "console log": _logged(exc, "console")}
    for where, text in texts.items():
        leaked = [s for s in secrets if s in text]
        assert not leaked, f"{leaked} in the {where} of {type(exc).__name__}:\n{text}"
        assert MARKER not in text, f"part of a secret in the {where}:\n{text}"


# --- Count: httpx exceptions that carry the request -------------------------------------------

def _auth_header(request: httpx.Request) -> str:
    return str(request.headers.get("authorization", ""))


def _raises(kind: str) -> Callable[[httpx.Request], httpx.Response]:
    """A transport failure whose message, request and response all hold the bearer."""
    def handler(request: httpx.Request) -> httpx.Response:
        header = _auth_header(request)
        message = f"failed with headers {dict(request.headers)!r} ({header})"
        if kind == "connect":
            raise httpx.ConnectError(message, request=request)
        if kind == "read_timeout":
            raise httpx.ReadTimeout(message, request=request)
        if kind == "connect_timeout":
            raise httpx.ConnectTimeout(message, request=request)
        if kind == "remote_protocol":
            raise httpx.RemoteProtocolError(message, request=request)
        if kind == "read_error":
            raise httpx.ReadError(message, request=request)
        if kind == "proxy":
            raise httpx.ProxyError(message, request=request)
        if kind == "decoding":
            raise httpx.DecodingError(message, request=request)
        assert kind == "status"
        response = httpx.Response(502, request=request, text=header,
                                  headers={"X-Echo-Authorization": header})
        raise httpx.HTTPStatusError(message, request=request, response=response)
    return handler


TRANSPORT_KINDS = ["connect", "read_timeout", "connect_timeout", "remote_protocol",
                   "read_error", "proxy", "decoding", "status"]


def _count_calls(provider: CountProvider, auth: Secret) -> dict[str, Callable[[], object]]:
    return {
        "list_keys": lambda: provider.list_keys("sa_1", auth),
        "create_key": lambda: provider.create_key("sa_1", "rotator:app:rot_1", auth),
        "delete_key": lambda: provider.delete_key("sa_1", "key_1", auth),
        "whoami": lambda: provider.whoami(auth),
    }


@pytest.mark.parametrize("kind", TRANSPORT_KINDS)
@pytest.mark.parametrize("auth", [MGMT, NEW], ids=["management-key", "new-key"])
def test_httpx_exceptions_never_reach_the_caller(kind: str, auth: str) -> None:
    with CountProvider("https://count.test", transport=httpx.MockTransport(_raises(kind)),
                       retry=TWO_FAST, sleep=lambda _s: None) as provider:
        for name, call in _count_calls(provider, Secret(auth)).items():
            with pytest.raises(RotatorError) as caught:
                call()
            assert isinstance(caught.value, ProviderUnavailable), (name, caught.value)
            assert caught.value.context["error"] in {
                "ConnectError", "ReadTimeout", "ConnectTimeout", "RemoteProtocolError",
                "ReadError", "ProxyError", "DecodingError", "HTTPStatusError"}
            assert_clean(caught.value)


def _echo_json(status: int) -> Callable[[httpx.Request], httpx.Response]:
    """A misbehaving proxy: the Authorization header everywhere in a JSON error envelope."""
    def handler(request: httpx.Request) -> httpx.Response:
        header = _auth_header(request)
        bearer = header.removeprefix("Bearer ")
        body = {"success": False, "request_id": f"req-{bearer}",
                "error": {"code": bearer, "message": f"you sent {header}",
                          "details": {"authorization": header}}}
        return httpx.Response(status, json=body, headers={
            "X-Request-Id": bearer, "WWW-Authenticate": f'Bearer error="{bearer}"',
            "Retry-After": bearer, "RateLimit-Reset": bearer, "X-Echo": header})
    return handler


def _echo_html(status: int) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        header = _auth_header(request)
        page = f"<html><body><h1>{status}</h1><pre>Authorization: {header}</pre></body></html>"
        return httpx.Response(status, text=page, headers={
            "Content-Type": "text/html", "X-Request-Id": header.removeprefix("Bearer ")})
    return handler


ERROR_STATUSES = [400, 401, 403, 404, 405, 408, 409, 410, 422, 429, 500, 502, 503, 504]


@pytest.mark.parametrize("status", ERROR_STATUSES)
@pytest.mark.parametrize("shape", ["json", "html"])
def test_a_server_echoing_the_authorization_header_leaks_nothing(status: int,
                                                                  shape: str) -> None:
    handler = (_echo_json if shape == "json" else _echo_html)(status)
    for auth in (MGMT, NEW):
        with CountProvider("https://count.test", transport=httpx.MockTransport(handler),
                           retry=TWO_FAST, sleep=lambda _s: None) as provider:
            for call in _count_calls(provider, Secret(auth)).values():
                with pytest.raises(RotatorError) as caught:
                    call()
                assert caught.value.context.get("status") == str(status), caught.value
                assert_clean(caught.value)


# --- Count: the answer that carries a new key --------------------------------------------------

def _created(result: dict[str, Any], *, rid: str | None = "req-1",
             headers: dict[str, str] | None = None) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, json={"success": True, "request_id": rid, "result": result},
                              headers=headers)
    return handler


GOOD_KEY = {"key_id": "key_1", "api_key": NEW, "name": "rotator:app:rot_1",
            "created_at": "2026-11-01T12:00:00Z"}


@pytest.mark.parametrize("result", [
    pytest.param({**GOOD_KEY, "created_at": f"not a time {NEW}"}, id="bad-created-at"),
    pytest.param({**GOOD_KEY, "key_id": ""}, id="empty-key-id"),
    pytest.param({**GOOD_KEY, "name": 42}, id="bad-name"),
    pytest.param({"api_key": NEW}, id="only-the-secret"),
])
@pytest.mark.parametrize("echo", ["body", "header"])
def test_a_malformed_create_answer_does_not_carry_the_new_key_out(result: dict[str, Any],
                                                                 echo: str) -> None:
    """The new key is in the body; a server that also echoes it as the request id (a
    proxy that copies fields around) must not get it into the error's context."""
    handler = (_created(result, rid=NEW) if echo == "body"
               else _created(result, rid=None, headers={"X-Request-Id": NEW}))
    with CountProvider("https://count.test", transport=httpx.MockTransport(handler),
                       retry=ONE_ATTEMPT) as provider, pytest.raises(ProtocolError) as caught:
        provider.create_key("sa_1", "rotator:app:rot_1", Secret(MGMT))
    assert_clean(caught.value)


@pytest.mark.parametrize("echo", ["body", "header"])
def test_a_new_key_echoed_as_its_request_id_is_not_kept_as_one(echo: str) -> None:
    """The request id of a create goes to the audit trail: it must not be the key."""
    handler = (_created(GOOD_KEY, rid=NEW) if echo == "body"
               else _created(GOOD_KEY, rid=None, headers={"X-Request-Id": f"x-{NEW}"}))
    with CountProvider("https://count.test", transport=httpx.MockTransport(handler),
                       retry=ONE_ATTEMPT) as provider:
        new = provider.create_key("sa_1", "rotator:app:rot_1", Secret(MGMT))
    assert new.secret.reveal() == NEW
    assert new.request_id is None or NEW not in new.request_id
    assert NEW not in repr(new)


# --- the runner, end to end, on the emulator's API through httpx ------------------------------

@dataclass
class Sabotage:
    """Fails chosen calls of the in-process Count with an httpx exception or an echo."""

    rules: dict[tuple[str, str], Callable[[httpx.Request], httpx.Response]] = \
        field(default_factory=dict)   # (method, path pattern) -> failing handler
    hits: int = 0

    def match(self, request: httpx.Request) -> Callable[[httpx.Request], httpx.Response] | None:
        for (method, pattern), handler in self.rules.items():
            if request.method == method and re.search(pattern, request.url.path):
                self.hits += 1
                return handler
        return None


class InProcessCount:
    """The emulator's ``CountApi`` behind ``httpx.MockTransport``: no sockets.

    The admin's management key is ``MGMT`` (the handler maps it onto the key the
    emulator issued), so it is shaped like no secret the log redactor knows.
    """

    def __init__(self) -> None:
        self.state = EmulatorState()
        self.api = CountApi(self.state, EmulatorSettings(), sleep=lambda _s: None)
        _, admin_key = self.state.add_account("admin", role="admin")
        self.admin_secret = admin_key.secret
        account, key = self.state.add_account("app")
        self.account_id, self.first_secret = account.id, key.secret
        self.sabotage = Sabotage()

    def handler(self, request: httpx.Request) -> httpx.Response:
        failing = self.sabotage.match(request)
        if failing is not None:
            return failing(request)
        bearer = _auth_header(request).removeprefix("Bearer ") or None
        if bearer == MGMT:
            bearer = self.admin_secret
        reply = self.api.handle(Request(request.method, request.url.path, bearer,
                                        request.content))
        return httpx.Response(reply.status, content=reply.body,
                              headers={"Content-Type": reply.content_type, **reply.headers})

    def issued(self) -> tuple[str, ...]:
        return (*self.state.issued_secrets(), MGMT)


REF = SecretRef("secret", "count/app", "api_key")


def _rotate(count: InProcessCount, store: FakeStore, repo: MemoryRepository,
            clock: FakeClock) -> Any:
    with CountProvider("https://count.test", transport=httpx.MockTransport(count.handler),
                       retry=TWO_FAST, sleep=lambda _s: None) as provider:
        runner = Runner(providers={"count": provider}, store=store, repo=repo, clock=clock,
                        holder="h1", lease_ttl=60, rollback_retry_delay=1)
        spec = TargetSpec(name="app", provider="count", service_account=count.account_id,
                          ref=REF, grace_seconds=0, probe_timeout=3, probe_interval=1,
                          management_key=Secret(MGMT))
        return runner.rotate(spec).rotation


SCENARIOS: dict[str, tuple[dict[tuple[str, str], Callable[[httpx.Request], httpx.Response]],
                           set[Status]]] = {
    "success": ({}, {Status.COMPLETED}),
    # plan: the probe of the current key fails on the wire
    "plan-connect": ({("GET", r"/whoami$"): _raises("connect")}, {Status.FAILED}),
    # create: the management key's request dies with the header in the message
    "create-status-error": ({("POST", r"/api-keys$"): _raises("status")},
                            {Status.ROLLED_BACK}),
    "create-echo-403": ({("POST", r"/api-keys$"): _echo_json(403)}, {Status.ROLLED_BACK}),
    # list before create: a proxy page echoing the header; the rotation waits to be resumed
    "list-echo-502": ({("GET", r"/api-keys$"): _echo_html(502)}, {Status.RUNNING}),
    # revoke: the old key's delete fails for good, the rotation still completes
    "revoke-timeout": ({("DELETE", r"/api-keys/[^/]+$"): _raises("read_timeout")},
                       {Status.COMPLETED}),
}


def _logging_with_raw_capture(fmt: Literal["json", "console"],
                              stream: io.StringIO) -> list[dict[str, Any]]:
    """rotator's logging to ``stream``, plus a copy of every event dict as the code built it
    (before the redactor runs): a secret there was handed to the logger."""
    configure_logging(fmt=fmt, level="debug", stream=stream)
    raw: list[dict[str, Any]] = []

    def keep(_logger: Any, _method: str, event: Any) -> Any:
        raw.append(dict(event))
        return event

    processors = structlog.get_config()["processors"]
    structlog.configure(processors=[keep, *processors])
    return raw


@pytest.mark.parametrize("fmt", ["json", "console"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_runner_logs_and_audit_hold_no_secret_when_calls_fail(
        scenario: str, fmt: Literal["json", "console"]) -> None:
    rules, expected = SCENARIOS[scenario]
    count = InProcessCount()
    count.sabotage.rules = dict(rules)
    store, repo, clock = FakeStore(), MemoryRepository(), FakeClock()
    store.put(REF, Secret(count.first_secret))
    stream = io.StringIO()
    raw = _logging_with_raw_capture(fmt, stream)
    rotation = _rotate(count, store, repo, clock)
    assert rotation.status in expected, (rotation.status, rotation.reason)
    assert not rules or count.sabotage.hits, "the sabotage never fired"
    assert raw and stream.getvalue(), "nothing was logged"
    texts = {
        "log events as built": repr(raw),
        f"{fmt} logs": stream.getvalue(),
        "audit events": repr(repo.recorded),
        "rotation": repr(repo.by_id) + repr(rotation) + str(rotation.reason),
        "pending cleanups": repr(repo.pending_cleanups("app")),
    }
    secrets = count.issued()
    assert len(secrets) >= 3
    for where, text in texts.items():
        leaked = [s[:10] + "…" for s in secrets if s in text]
        assert not leaked, f"{leaked} in the {where}"
        assert MARKER not in text, f"part of the management key in the {where}"
    if rotation.status is Status.COMPLETED:
        assert store.current(REF).fingerprint in repr(repo.recorded)  # the scan sees real data
    if scenario == "revoke-timeout":
        assert repo.pending_cleanups("app"), "the failed revoke was not queued"


# --- Vault: requests exceptions, echoing servers, bodies hvac cannot read ----------------------

Answer = tuple[int, str, bytes, dict[str, str]]   # status, content type, body, headers


class _EchoServer(ThreadingHTTPServer):
    answer: Callable[[str, str, str], Answer]
    issue_tokens = False   # answer AppRole logins with ISSUED_TOKEN, whatever ``answer`` says


class _EchoHandler(BaseHTTPRequestHandler):
    server: _EchoServer

    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        token = self.headers.get("X-Vault-Token", "")
        answer: Answer
        if self.server.issue_tokens and self.path.endswith("/login"):
            answer = _json(200, {"auth": {"client_token": ISSUED_TOKEN, "lease_duration": 3600,
                                          "renewable": True}})
        else:
            answer = self.server.answer(token, body, self.path)
        status, ctype, payload, headers = answer
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_LIST = _reply

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo_server() -> Iterator[_EchoServer]:
    server = _EchoServer(("127.0.0.1", 0), _EchoHandler)
    with serving(server):
        yield server


def _json(status: int, document: object, **headers: str) -> Answer:
    return status, "application/json", json.dumps(document).encode(), headers


def _everything(token: str, body: str) -> str:
    return f"token {token}; request body {body}"


VAULT_ANSWERS: dict[str, Callable[[str, str, str], Answer]] = {
    # Vault's own shape, the credentials and the request body echoed in its messages
    "errors-400": lambda t, b, _p: _json(400, {"errors": [_everything(t, b)]}),
    "errors-403": lambda t, b, _p: _json(403, {"errors": ["permission denied", t, b]}),
    "errors-404": lambda t, b, _p: _json(404, {"errors": [t, b]}),
    "errors-500": lambda t, b, _p: _json(500, {"errors": [_everything(t, b)]}),
    "sealed-503": lambda t, b, _p: _json(503, {"errors": [f"Vault is sealed {t}"]}),
    "errors-412": lambda t, b, _p: _json(412, {"errors": [t]}),
    "errors-504": lambda t, b, _p: _json(504, {"errors": [t]}),
    "errors-string": lambda t, b, _p: _json(500, {"errors": _everything(t, b)}),
    # echoed in headers, with a charset hvac does not recognise as JSON
    "headers-only": lambda t, b, _p: (400, "application/json; charset=utf-8",
                                      json.dumps({"errors": [t]}).encode(),
                                      {"X-Vault-Token": t, "X-Echo": b[:200]}),
    # a proxy's page
    "html-502": lambda t, b, _p: (502, "text/html", f"<pre>{_everything(t, b)}</pre>".encode(),
                                  {"X-Echo": t}),
    # error bodies hvac cannot read: errors that are objects, a body that is a list
    "errors-objects-400": lambda t, b, _p: _json(400, {"errors": [{"token": t, "body": b}]}),
    "errors-objects-503": lambda t, b, _p: _json(503, {"errors": [{"token": t}]}),
    "body-is-a-list-403": lambda t, b, _p: _json(403, [t, b]),
    # a 2xx that is not Vault's: a proxy's login page
    "ok-html": lambda t, b, _p: (200, "text/html", f"<p>{_everything(t, b)}</p>".encode(), {}),
    "ok-list": lambda t, b, _p: _json(200, [t, b]),
}
# answers after which a retry may help: the error must say so
TRANSIENT_ANSWERS = {"errors-500", "sealed-503", "errors-412", "errors-504", "errors-string",
                     "html-502", "errors-objects-503"}

VaultOp = Callable[[VaultStore], object]
VAULT_OPS: dict[str, VaultOp] = {
    "read": lambda store: store.read_current(SecretRef("kv", "count/app", "api_key")),
    "write": lambda store: store.write(SecretRef("kv", "count/app", "api_key"), Secret(NEW),
                                       cas=0, custom_metadata={"rotator_key_id": "key_1"}),
    "login": lambda store: store.login(),
    "renew": lambda store: store.renew_if_needed(),
}
AUTHS: dict[str, Callable[[], VaultAuth]] = {
    "token": lambda: TokenAuth(Secret(VAULT_TOKEN)),
    "approle": lambda: AppRoleAuth(role_id="role-1", secret_id=Secret(SECRET_ID)),
}
# (auth, whether the AppRole login succeeds and hands out ISSUED_TOKEN)
AUTH_CASES = {"token": ("token", False), "approle-login-fails": ("approle", False),
              "approle-logged-in": ("approle", True)}


def _vault_error(url: str, auth: VaultAuth, op: VaultOp, *,
                 login_first: bool = False) -> RotatorError:
    with VaultStore(url, auth, retry=ONE_ATTEMPT, timeout=5, sleep=lambda _s: None) as store:
        if login_first:
            store.login()
        try:
            op(store)
        except RotatorError as exc:
            return exc
        except Exception as exc:  # an untranslated exception: the failure
            pytest.fail(f"untranslated {type(exc).__name__} left VaultStore: "
                        f"{_rendered(exc)[-2000:]}")
    pytest.fail("the call succeeded against a misbehaving server")


@pytest.mark.parametrize("answer", list(VAULT_ANSWERS))
@pytest.mark.parametrize("case", list(AUTH_CASES))
def test_failing_vault_calls_leak_no_token_secret_id_or_value(echo_server: _EchoServer,
                                                              answer: str, case: str) -> None:
    auth, logged_in = AUTH_CASES[case]
    echo_server.answer = VAULT_ANSWERS[answer]
    echo_server.issue_tokens = logged_in
    url = f"http://127.0.0.1:{echo_server.server_address[1]}"
    for name, op in VAULT_OPS.items():
        if name == "login" and (logged_in or (answer.startswith("ok-") and auth == "token")):
            continue   # the login succeeds (a token's is a lookup-self whose answer is unused)
        error = _vault_error(url, AUTHS[auth](), op, login_first=logged_in)
        assert isinstance(error, VaultError | VaultUnavailable), (name, error)
        if answer in TRANSIENT_ANSWERS:
            assert isinstance(error, TransientError), (name, error)
        assert_clean(error)


def test_an_issued_token_is_never_shown_after_login(echo_server: _EchoServer) -> None:
    """AppRole: the token Vault hands out, echoed back by the next call's error."""
    echo_server.answer = VAULT_ANSWERS["errors-403"]
    echo_server.issue_tokens = True
    url = f"http://127.0.0.1:{echo_server.server_address[1]}"
    # 403 makes the session log in again once and retry: two logins, two echoes
    error = _vault_error(url, AUTHS["approle"](), VAULT_OPS["read"])
    assert error.context.get("status") == "403"
    assert_clean(error)


@pytest.mark.parametrize("token", [
    pytest.param("\ufeff" + VAULT_TOKEN, id="utf8-bom"),      # a token file saved with a BOM
    pytest.param(VAULT_TOKEN + "\u20ac", id="non-latin-1"),
    pytest.param(VAULT_TOKEN + "\nX-Injected: 1", id="newline"),
    pytest.param(VAULT_TOKEN + "\x00", id="nul"),
])
def test_a_token_that_is_no_header_value_fails_cleanly(echo_server: _EchoServer,
                                                        token: str) -> None:
    echo_server.answer = VAULT_ANSWERS["errors-403"]
    url = f"http://127.0.0.1:{echo_server.server_address[1]}"
    for op in VAULT_OPS.values():
        error = _vault_error(url, TokenAuth(Secret(token)), op)
        assert_clean(error, (*ALL, token))


def test_unreachable_and_tls_failures_leak_nothing(echo_server: _EchoServer) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    plain_http_as_https = f"https://127.0.0.1:{echo_server.server_address[1]}"
    echo_server.answer = VAULT_ANSWERS["errors-400"]
    for auth in AUTHS.values():
        for op in VAULT_OPS.values():
            down = _vault_error(closed, auth(), op)
            assert isinstance(down, VaultUnavailable), down
            assert_clean(down)
            tls = _vault_error(plain_http_as_https, auth(), op)
            assert isinstance(tls, VaultError) and "TLS" in tls.message, tls
            assert_clean(tls)


def test_a_server_that_hangs_up_or_stalls_leaks_nothing() -> None:
    """A peer that closes the connection at once, then one that never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    mode = {"hang_up": True}
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if mode["hang_up"]:
                conn.recv(65536)
                conn.close()
            else:
                held.append(conn)   # read nothing, answer nothing

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        for hang_up in (True, False):
            mode["hang_up"] = hang_up
            for auth in AUTHS.values():
                with VaultStore(f"http://127.0.0.1:{port}", auth(), retry=ONE_ATTEMPT,
                                timeout=0.3) as store:
                    for op in VAULT_OPS.values():
                        with pytest.raises(RotatorError) as caught:
                            op(store)
                        assert isinstance(caught.value, VaultUnavailable), caught.value
                        assert_clean(caught.value)
            with CountProvider(f"http://127.0.0.1:{port}", retry=ONE_ATTEMPT,
                               timeout=0.3) as provider:
                for call in _count_calls(provider, Secret(MGMT)).values():
                    with pytest.raises(ProviderUnavailable) as count_caught:
                        call()
                    assert_clean(count_caught.value)
    finally:
        stop.set()
        thread.join(timeout=2)
        listener.close()
        for conn in held:
            conn.close()


def test_secret_marker_is_in_every_secret() -> None:
    """The MARKER check above only means something if every secret carries it."""
    assert all(MARKER in s for s in ALL)
    assert not any(re.search(r"\b(?:cnt_|hvs\.|s\.)", s) for s in ALL)
