"""The guards of rotator.adapters.http, against real local servers: no redirect followed
(Vault's token and write body, the AppRole login, https to http, Count), a wall-clock
deadline per attempt, a bounded body however it is encoded, nothing taken from the
environment (proxies, CA bundles), and the configured ``proxy`` used.

Every server here records what reached it, so "never sent" is checked where it would
have arrived.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rotator.adapters.count.client import CallRecord, CountProvider
from rotator.adapters.vault.store import AppRoleAuth, TokenAuth, VaultStore
from rotator.app.runtime import build_runtime
from rotator.config.model import load_config
from rotator.config.retry import RetryPolicy
from rotator.core.errors import (
    ProtocolError,
    ProviderError,
    ProviderUnavailable,
    SecretNotFound,
    VaultError,
    VaultUnavailable,
)
from rotator.core.ports import SecretRef
from rotator.core.secret import Secret
from tests.fixtures.openbao import OpenBao
from tests.integration import test_security_defaults
from tests.integration.test_security_defaults import Pki, TlsProxy, make_pki

pytestmark = pytest.mark.integration

ONCE = RetryPolicy(max_attempts=1)
WHOAMI = json.dumps({"success": True, "result": {"service_account_id": "sa-1",
                                                 "key_id": "key-1"}}).encode()
BEARER = Secret("cnt_outbound_guard_bearer_0123456789")
NEW_KEY = Secret("cnt_the_new_key_that_must_stay_home_42")

approle_login = test_security_defaults.approle_login   # the fixture, for this module


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Reply = Callable[[BaseHTTPRequestHandler, Seen], None]


@dataclass
class Server:
    """A loopback HTTP server that records every request and answers with ``reply``."""

    reply: Reply
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Seen(self.command, self.path, dict(self.headers.items()),
                               self.rfile.read(length))
                owner.seen.append(request)
                with contextlib.suppress(OSError):   # the client hung up (deadline tests)
                    owner.reply(self, request)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_LIST = _any

            def log_message(self, *_: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def saw(self, *secrets: str) -> list[str]:
        """Which of ``secrets`` reached this server, in any header or body."""
        raw = b"".join(f"{r.method} {r.path} {r.headers}".encode() + r.body for r in self.seen)
        return [s for s in secrets if s.encode() in raw]


def answer(handler: BaseHTTPRequestHandler, status: int, body: bytes = b"",
           headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def forward(upstream: str) -> Reply:
    """Pass the request on to ``upstream`` (an http://host:port, or absolute URIs)."""
    def reply(handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        target = seen.path if seen.path.startswith("http://") else upstream + seen.path
        host_port, _, path = target.removeprefix("http://").partition("/")
        conn = http.client.HTTPConnection(host_port, timeout=10)
        try:
            skip = {"host", "content-length", "proxy-connection", "connection"}
            conn.request(seen.method, "/" + path, body=seen.body or None,
                         headers={k: v for k, v in seen.headers.items() if k.lower() not in skip})
            response = conn.getresponse()
            answer(handler, response.status, response.read())
        finally:
            conn.close()
    return reply


@pytest.fixture
def servers() -> Iterator[Callable[[Reply], Server]]:
    made: list[Server] = []

    def make(reply: Reply) -> Server:
        made.append(Server(reply))
        return made[-1]

    yield make
    for server in made:
        server.close()


def redirecting(to: Server, *, when: Callable[[Seen], bool] = lambda _: True,
                otherwise: Reply | None = None) -> Reply:
    """307 to the same path on ``to`` (with a query a Location must not leak)."""
    def reply(handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        if when(seen) or otherwise is None:
            answer(handler, 307, headers={"Location": f"{to.url}{seen.path}?sig=location-q"})
        else:
            otherwise(handler, seen)
    return reply


def ref(mount: str) -> SecretRef:
    return SecretRef(mount, f"count/{uuid.uuid4().hex[:8]}", "api_key")


# --- redirects ---------------------------------------------------------------------------------

def test_a_vault_redirect_of_the_write_is_refused_and_the_target_sees_nothing(
        openbao: OpenBao, vault_mount: str, servers: Callable[[Reply], Server]) -> None:
    elsewhere = servers(lambda handler, _: answer(handler, 204))
    # Everything reaches the real OpenBao, except the KV write, answered 307.
    front = servers(redirecting(elsewhere, when=lambda seen: seen.method in ("POST", "PUT")
                                and "/data/" in seen.path, otherwise=forward(openbao.url)))
    with VaultStore(front.url, TokenAuth(Secret(openbao.root_token)), retry=ONCE) as store, \
            pytest.raises(VaultError) as caught:
        store.write(ref(vault_mount), NEW_KEY, 0, {})
    assert elsewhere.seen == []                                  # nothing went further
    assert any("/data/" in seen.path for seen in front.seen)   # though the write was tried
    assert type(caught.value) is VaultError               # permanent: not retried
    assert caught.value.context["status"] == "307"
    assert "redirect" in str(caught.value) and "Vault" in str(caught.value)
    assert "location-q" not in repr(caught.value.context) + str(caught.value)


def test_a_vault_redirect_of_the_approle_login_is_refused(
        openbao: OpenBao, vault_mount: str, approle_login: tuple[str, str, str],
        servers: Callable[[Reply], Server]) -> None:
    mount, role_id, secret_id = approle_login
    elsewhere = servers(lambda handler, _: answer(handler, 204))
    front = servers(redirecting(elsewhere, when=lambda seen: seen.path.endswith("/login"),
                                otherwise=forward(openbao.url)))
    auth = AppRoleAuth(role_id, Secret(secret_id), mount)
    with VaultStore(front.url, auth, retry=ONCE) as store, pytest.raises(VaultError) as caught:
        store.login()
    assert front.saw(secret_id) == [secret_id]       # the login was sent to Vault...
    assert elsewhere.seen == []                      # ...and to nobody else
    assert caught.value.context["status"] == "307"


def test_an_https_vault_redirecting_to_plain_http_is_refused(
        openbao: OpenBao, tmp_path: Path, servers: Callable[[Reply], Server]) -> None:
    elsewhere = servers(lambda handler, _: answer(handler, 204))
    front = servers(redirecting(elsewhere))
    pki = make_pki(tmp_path / "pki")
    tls = TlsProxy(front.port, pki)
    try:
        with VaultStore(f"https://127.0.0.1:{tls.port}", TokenAuth(Secret(openbao.root_token)),
                        retry=ONCE, verify=str(pki.ca)) as store, \
                pytest.raises(VaultError) as caught:
            store.write(SecretRef("secret", "count/x", "api_key"), NEW_KEY, 0, {})
    finally:
        tls.close()
    assert len(front.seen) == 1 and elsewhere.seen == []
    assert caught.value.context["status"] == "307"


def test_a_count_redirect_is_refused_and_not_followed(
        servers: Callable[[Reply], Server]) -> None:
    elsewhere = servers(lambda handler, _: answer(handler, 200, WHOAMI))
    front = servers(redirecting(elsewhere))
    with CountProvider(front.url, retry=RetryPolicy(max_attempts=3), sleep=lambda _: None) as p, \
            pytest.raises(ProtocolError) as caught:
        p.whoami(BEARER)
    assert caught.value.context["status"] == "307" and "redirect" in str(caught.value)
    assert "location-q" not in str(caught.value)
    assert len(front.seen) == 1 and elsewhere.seen == []   # not retried, not followed


# --- the per-attempt deadline ------------------------------------------------------------------

def dripping(phase: str, seconds: float = 0.5) -> Reply:
    """One byte every ``seconds``: of the headers, or of a long body after them."""
    def reply(handler: BaseHTTPRequestHandler, _: Seen) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n"
        if phase == "body":
            handler.wfile.write(head)
            handler.wfile.flush()
        for byte in (head if phase == "headers" else b" " * 400):
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(seconds)
    return reply


TIMEOUT = 1.0
MARGIN = 0.9   # thread start, the shut-down read returning, a loaded machine


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_a_dripping_count_is_cut_at_the_timeout_each_attempt_and_in_all(
        phase: str, servers: Callable[[Reply], Server]) -> None:
    drip = servers(dripping(phase))
    records: list[CallRecord] = []
    policy = RetryPolicy(max_attempts=10, base_delay=0.1, max_delay=0.1, max_elapsed=2.0)
    started = time.monotonic()
    with CountProvider(drip.url, timeout=TIMEOUT, retry=policy, on_call=records.append) as p, \
            pytest.raises(ProviderUnavailable, match="timed out"):
        p.whoami(BEARER)
    elapsed = time.monotonic() - started
    assert len(records) >= 2                                       # it was retried
    assert max(r.duration_seconds for r in records) < TIMEOUT + MARGIN
    assert elapsed < TIMEOUT + policy.max_elapsed + MARGIN


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_a_dripping_vault_is_cut_at_the_timeout_each_attempt_and_in_all(
        phase: str, servers: Callable[[Reply], Server]) -> None:
    drip = servers(dripping(phase))
    started = time.monotonic()
    with VaultStore(drip.url, TokenAuth(Secret("s.not-a-real-token")), timeout=TIMEOUT,
                    retry=ONCE) as store, pytest.raises(VaultUnavailable):
        store.read_current(SecretRef("secret", "count/x", "api_key"))
    assert time.monotonic() - started < TIMEOUT + MARGIN          # one attempt

    policy = RetryPolicy(max_attempts=10, base_delay=0.1, max_delay=0.1, max_elapsed=2.0)
    started = time.monotonic()
    with VaultStore(drip.url, TokenAuth(Secret("s.not-a-real-token")), timeout=TIMEOUT,
                    retry=policy) as store, pytest.raises(VaultUnavailable):
        store.read_current(SecretRef("secret", "count/x", "api_key"))
    assert time.monotonic() - started < TIMEOUT + policy.max_elapsed + MARGIN
    assert len(drip.seen) >= 3                                     # retried meanwhile


# --- a gzip bomb -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """About 255 KiB of gzip that inflates to 256 MiB of zeros (built without holding them)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    bomb = b"".join(packer.compress(zeros) for _ in range(256)) + packer.flush()
    assert len(bomb) < 300 * 1024
    return bomb


_MEASURE = textwrap.dedent("""
    import sys
    from rotator.adapters.count.client import CountProvider
    from rotator.adapters.vault.store import TokenAuth, VaultStore
    from rotator.config.retry import RetryPolicy
    from rotator.core.errors import RotatorError
    from rotator.core.ports import SecretRef
    from rotator.core.secret import Secret

    def peak_kib():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])

    kind, url = sys.argv[1], sys.argv[2]
    once = RetryPolicy(max_attempts=1)
    def call():
        if kind == "count":
            with CountProvider(url, retry=once) as provider:
                provider.whoami(Secret("cnt_bearer_for_the_bomb_test_123"))
        else:
            with VaultStore(url, TokenAuth(Secret("s.bomb-test-token")), retry=once) as s:
                s.read_current(SecretRef("secret", "count/x", "api_key"))
    try:   # warm-up: a plain small answer, so imports and pools are in the baseline
        call()
    except RotatorError:
        pass
    before = peak_kib()
    try:
        call()
        print("no error")
    except RotatorError as exc:
        print(type(exc).__name__, exc)
    print("growth_kib", peak_kib() - before)
""")


@pytest.mark.parametrize("kind", ["count", "vault"])
def test_a_gzip_bomb_fails_on_the_cap_with_memory_bounded(
        kind: str, gzip_bomb: bytes, servers: Callable[[Reply], Server]) -> None:
    served: list[str] = []

    def reply(handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        served.append(seen.headers.get("Accept-Encoding", ""))
        if len(served) == 1:
            answer(handler, 200, b"{}")
        else:
            answer(handler, 200, gzip_bomb, {"Content-Encoding": "gzip"})

    bomb = servers(reply)
    done = subprocess.run([sys.executable, "-c", _MEASURE, kind, bomb.url],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    outcome, growth = done.stdout.splitlines()[-2:]
    growth_mib = int(growth.split()[1]) / 1024
    assert outcome.startswith(("ProtocolError", "VaultError")), outcome
    assert "larger than" in outcome or "more than" in outcome, outcome
    assert growth_mib < 20, f"memory grew by {growth_mib:.1f} MiB"
    assert served[-1] == "identity"                          # it asked for no compression


# --- nothing from the environment; the configured proxy ------------------------------------

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                   "all_proxy")


def _count_and_vault_calls(count_url: str, openbao: OpenBao, mount: str,
                           proxy: str | None = None) -> None:
    with CountProvider(count_url, retry=ONCE, proxy=proxy) as provider:
        assert provider.whoami(BEARER).key_id == "key-1"
    with VaultStore(openbao.url, TokenAuth(Secret(openbao.root_token)), retry=ONCE,
                    proxy=proxy) as store:
        secret_ref = ref(mount)
        version = store.write(secret_ref, NEW_KEY, 0, {})
        assert store.read_current(secret_ref).version == version


def test_proxy_variables_in_the_environment_are_ignored(
        openbao: OpenBao, vault_mount: str, servers: Callable[[Reply], Server],
        monkeypatch: pytest.MonkeyPatch) -> None:
    count = servers(lambda handler, _: answer(handler, 200, WHOAMI))
    proxy = servers(forward(""))
    for name in PROXY_VARIABLES:
        monkeypatch.setenv(name, proxy.url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    _count_and_vault_calls(count.url, openbao, vault_mount)
    assert proxy.seen == []
    assert len(count.seen) == 1


def test_the_configured_proxy_is_used(openbao: OpenBao, vault_mount: str,
                                      servers: Callable[[Reply], Server]) -> None:
    count = servers(lambda handler, _: answer(handler, 200, WHOAMI))
    proxy = servers(forward(""))
    _count_and_vault_calls(count.url, openbao, vault_mount, proxy=proxy.url)
    targets = [seen.path for seen in proxy.seen]
    assert any(path.startswith(count.url) for path in targets), targets
    assert any(path.startswith(openbao.url) for path in targets), targets
    assert len(count.seen) == 1


@pytest.fixture
def tls_pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def test_ca_bundle_variables_in_the_environment_are_ignored(
        openbao: OpenBao, tls_pki: Pki, servers: Callable[[Reply], Server],
        monkeypatch: pytest.MonkeyPatch) -> None:
    count = servers(lambda handler, _: answer(handler, 200, WHOAMI))
    tls_count, tls_vault = TlsProxy(count.port, tls_pki), TlsProxy(openbao.port, tls_pki)
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.setenv(name, str(tls_pki.ca))
    try:
        with CountProvider(f"https://127.0.0.1:{tls_count.port}", retry=ONCE) as provider, \
                pytest.raises(ProviderError, match="TLS"):
            provider.whoami(BEARER)
        with VaultStore(f"https://127.0.0.1:{tls_vault.port}",
                        TokenAuth(Secret(openbao.root_token)), retry=ONCE) as store, \
                pytest.raises(VaultError, match="TLS"):
            store.read_current(SecretRef("secret", "count/x", "api_key"))
        # The same CA named in the config is trusted: the refusal above was the env's.
        with CountProvider(f"https://127.0.0.1:{tls_count.port}", retry=ONCE,
                           verify=str(tls_pki.ca)) as provider:
            assert provider.whoami(BEARER).key_id == "key-1"
    finally:
        tls_count.close()
        tls_vault.close()
    assert count.seen[-1:] and len(count.seen) == 1


def test_the_proxy_keys_of_the_config_reach_both_clients(
        openbao: OpenBao, vault_mount: str, servers: Callable[[Reply], Server],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    count = servers(lambda handler, _: answer(handler, 200, WHOAMI))
    proxy = servers(forward(""))
    monkeypatch.setenv("OUTBOUND_VAULT_TOKEN", openbao.root_token)
    monkeypatch.setenv("OUTBOUND_COUNT_KEY", BEARER.reveal())
    config = tmp_path / "rotator.toml"
    config.write_text(textwrap.dedent(f"""\
        [database]
        url = "sqlite:///{tmp_path / 'rotator.db'}"
        [vault]
        url = "{openbao.url}"
        proxy = "{proxy.url}"
        [vault.auth]
        method = "token"
        token_env = "OUTBOUND_VAULT_TOKEN"
        [providers.count]
        type = "count"
        base_url = "{count.url}"
        management_key_env = "OUTBOUND_COUNT_KEY"
        proxy = "{proxy.url}"
        [targets.app]
        provider = "count"
        service_account = "sa-1"
        vault_mount = "{vault_mount}"
        vault_path = "count/app"
        """))
    runtime = build_runtime(load_config(config), require_schema=False)
    try:
        assert runtime.providers["count"].whoami(BEARER).key_id == "key-1"
        with pytest.raises(SecretNotFound):
            runtime.store.read_current(SecretRef(vault_mount, "count/app", "api_key"))
    finally:
        runtime.close()
    targets = [seen.path for seen in proxy.seen]
    assert any(path.startswith(count.url) for path in targets), targets
    assert any(path.startswith(openbao.url) for path in targets), targets
