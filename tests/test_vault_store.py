"""VaultStore against a real OpenBao dev server (see tests/fixtures/openbao.py)."""

from __future__ import annotations

import logging
import secrets
import traceback
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import hvac
import pytest
import requests
from requests.adapters import HTTPAdapter

from rotator.adapters.vault import auth as vault_auth
from rotator.adapters.vault import store as vault
from rotator.adapters.vault.auth import renewal_action
from rotator.adapters.vault.store import AppRoleAuth, KubernetesAuth, TokenAuth, VaultStore
from rotator.config.retry import RetryPolicy
from rotator.core.errors import (
    CasConflict,
    RotatorError,
    SecretNotFound,
    VaultError,
    VaultUnavailable,
)
from rotator.core.ports import SecretRef, SecretStore
from rotator.core.secret import Secret
from tests.fixtures.openbao import (
    OpenBao,
    restart_openbao,
    start_openbao,
    stop_openbao,
    vault_client,
)
from tests.support import all_at_once, serving

TINY_RETRY = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.001, max_elapsed=5)
NO_RETRY = RetryPolicy(max_attempts=1)


def key() -> Secret:
    return Secret(f"cnt_{secrets.token_urlsafe(24)}")


def assert_clean(exc: BaseException, *secret_values: str) -> None:
    """No secret in str/repr/traceback, and no third-party exception chained to ``exc``."""
    rendered = "".join(traceback.format_exception(exc)) + str(exc) + repr(exc)
    for value in secret_values:
        assert value not in rendered
    assert exc.__cause__ is None
    link = exc.__context__
    while link is not None:
        assert isinstance(link, RotatorError), f"chained third-party exception {type(link)}"
        link = link.__context__


@pytest.fixture
def store(openbao: OpenBao) -> Iterator[VaultStore]:
    with VaultStore(openbao.url, TokenAuth(Secret(openbao.root_token)), retry=NO_RETRY) as s:
        yield s


@pytest.fixture
def ref(vault_mount: str) -> SecretRef:
    return SecretRef(mount=vault_mount, path="count/prod", field="api_key")


def test_public_api() -> None:
    assert sorted(vault.__all__) == ["AppRoleAuth", "KubernetesAuth", "RenewalOutcome",
                                     "TokenAuth", "VaultAuth", "VaultStore"]
    for module in (vault, vault_auth):
        assert all(hasattr(module, name) for name in module.__all__)
    auth = KubernetesAuth(role="rotator")
    assert auth.jwt_path == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert auth.mount == "kubernetes"
    assert AppRoleAuth("r", Secret("s")).mount == "approle"


def test_round_trip(store: VaultStore, ref: SecretRef) -> None:
    as_port: SecretStore = store
    secret = key()
    version = as_port.write(ref, secret, cas=0, custom_metadata={"key_id": "k1"})
    assert version == 1
    current = as_port.read_current(ref)
    assert (current.version, current.secret, dict(current.custom_metadata)) == (
        1, secret, {"key_id": "k1"})


def test_write_keeps_other_fields(store: VaultStore, ref: SecretRef,
                                  openbao_root_client: hvac.Client) -> None:
    kv = openbao_root_client.secrets.kv.v2
    kv.create_or_update_secret(ref.path, secret={"api_key": "old", "account": "sa-1"},
                               mount_point=ref.mount)
    secret = key()
    assert store.write(ref, secret, cas=1, custom_metadata={}) == 2
    stored = kv.read_secret_version(ref.path, mount_point=ref.mount,
                                    raise_on_deleted_version=True)["data"]["data"]
    assert stored == {"api_key": secret.reveal(), "account": "sa-1"}


def test_cas_conflict(store: VaultStore, ref: SecretRef) -> None:
    store.write(ref, key(), cas=0, custom_metadata={})
    for stale in (0, 2):
        secret = key()
        with pytest.raises(CasConflict) as caught:
            store.write(ref, secret, cas=stale, custom_metadata={})
        assert caught.value.context["path"] == ref.path
        assert_clean(caught.value, secret.reveal())
    assert store.read_current(ref).version == 1


def test_custom_metadata_merged_and_settings_kept(store: VaultStore, ref: SecretRef,
                                                  openbao_root_client: hvac.Client) -> None:
    kv = openbao_root_client.secrets.kv.v2
    store.write(ref, key(), cas=0, custom_metadata={"key_id": "k1", "rotation_id": "r1"})
    kv.update_metadata(ref.path, max_versions=7, cas_required=True, delete_version_after="1h",
                       mount_point=ref.mount, custom_metadata={"key_id": "k1", "owner": "team-a"})
    store.write(ref, key(), cas=1, custom_metadata={"key_id": "k2", "rotation_id": "r2"})
    meta = kv.read_secret_metadata(ref.path, mount_point=ref.mount)["data"]
    assert (meta["max_versions"], meta["cas_required"], meta["delete_version_after"]) == (
        7, True, "1h0m0s")
    expected = {"key_id": "k2", "rotation_id": "r2", "owner": "team-a"}
    assert meta["custom_metadata"] == expected
    assert store.read_current(ref).custom_metadata == expected


def test_read_version_and_restore(store: VaultStore, ref: SecretRef) -> None:
    old, new = key(), key()
    store.write(ref, old, cas=0, custom_metadata={"key_id": "old"})
    store.write(ref, new, cas=1, custom_metadata={"key_id": "new"})
    previous = store.read_version(ref, 1)
    assert (previous.version, previous.secret) == (1, old)
    assert store.read_current(ref).secret == new
    # restore = read the old version, write it back on top of the current one
    restored = store.write(ref, previous.secret, cas=2, custom_metadata={"key_id": "old"})
    current = store.read_current(ref)
    assert (restored, current.version, current.secret) == (3, 3, old)
    with pytest.raises(ValueError, match="versions start at 1"):
        store.read_version(ref, 0)


def test_secret_not_found(store: VaultStore, ref: SecretRef,
                          openbao_root_client: hvac.Client) -> None:
    with pytest.raises(SecretNotFound) as missing_path:
        store.read_current(ref)
    assert missing_path.value.context["mount"] == ref.mount
    store.write(ref, key(), cas=0, custom_metadata={})
    other_field = SecretRef(ref.mount, ref.path, "admin_key")
    with pytest.raises(SecretNotFound, match="admin_key") as missing_field:
        store.read_current(other_field)
    assert missing_field.value.context["field"] == "admin_key"
    with pytest.raises(SecretNotFound):
        store.read_version(ref, 9)
    secret = key()
    store.write(ref, secret, cas=1, custom_metadata={})
    kv = openbao_root_client.secrets.kv.v2
    kv.delete_secret_versions(ref.path, [1], mount_point=ref.mount)
    kv.destroy_secret_versions(ref.path, [2], mount_point=ref.mount)
    with pytest.raises(SecretNotFound, match="deleted"):
        store.read_version(ref, 1)
    with pytest.raises(SecretNotFound, match="destroyed") as destroyed:
        store.read_current(ref)
    assert destroyed.value.context["version"] == "2"
    for caught in (missing_path, missing_field, destroyed):
        assert_clean(caught.value, secret.reveal())


def test_permission_denied(openbao: OpenBao, ref: SecretRef,
                           openbao_root_client: hvac.Client) -> None:
    token = openbao_root_client.auth.token.create(policies=["default"], ttl="5m")
    token_value = token["auth"]["client_token"]
    secret = key()
    with VaultStore(openbao.url, TokenAuth(Secret(token_value)), retry=NO_RETRY) as store:
        store.login()  # the token is valid; it is just not allowed anything
        for action in (lambda: store.read_current(ref),
                       lambda: store.write(ref, secret, cas=0, custom_metadata={})):
            with pytest.raises(VaultError) as caught:
                action()
            assert type(caught.value) is VaultError
            assert caught.value.context["status"] == "403"
            assert "permission denied" in str(caught.value)
            assert_clean(caught.value, token_value, secret.reveal())


def test_bad_token_is_not_ready_and_login_fails(openbao: OpenBao) -> None:
    bogus = f"s.{secrets.token_hex(12)}"
    with VaultStore(openbao.url, TokenAuth(Secret(bogus)), retry=NO_RETRY) as store:
        assert not store.is_ready()
        with pytest.raises(VaultError) as caught:
            store.login()
        assert_clean(caught.value, bogus)
        assert bogus not in repr(store)


@pytest.fixture
def approle(openbao_root_client: hvac.Client, vault_mount: str) -> Iterator[dict[str, str]]:
    """An AppRole mount with a policy on ``vault_mount``; returns what a role needs."""
    client = openbao_root_client
    mount = f"approle-{uuid.uuid4().hex[:12]}"
    policy = f"rotator-{mount}"
    client.sys.enable_auth_method("approle", path=mount)
    client.sys.create_or_update_policy(policy, f"""
        path "{vault_mount}/data/*" {{ capabilities = ["create", "read", "update"] }}
        path "{vault_mount}/metadata/*" {{ capabilities = ["create", "read", "update"] }}
    """)
    try:
        yield {"mount": mount, "policy": policy}
    finally:
        client.sys.disable_auth_method(mount)  # type: ignore[no-untyped-call]
        client.sys.delete_policy(policy)  # type: ignore[no-untyped-call]


def make_role(client: hvac.Client, approle: dict[str, str], name: str,
              **token_settings: str) -> AppRoleAuth:
    client.auth.approle.create_or_update_approle(
        name, token_policies=[approle["policy"]], mount_point=approle["mount"], **token_settings)
    role_id = client.auth.approle.read_role_id(name, mount_point=approle["mount"])
    secret_id = client.auth.approle.generate_secret_id(name, mount_point=approle["mount"])
    return AppRoleAuth(role_id=role_id["data"]["role_id"],
                       secret_id=Secret(secret_id["data"]["secret_id"]), mount=approle["mount"])


def test_approle_end_to_end(openbao: OpenBao, ref: SecretRef, approle: dict[str, str],
                            openbao_root_client: hvac.Client, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))          # nothing may be written there
    monkeypatch.setenv("VAULT_TOKEN", openbao.root_token)  # nor used instead of logging in
    auth = make_role(openbao_root_client, approle, "rotator", token_ttl="10m")
    secret = key()
    with VaultStore(openbao.url, auth, retry=NO_RETRY) as store:
        assert store.is_ready()
        store.login()
        assert store.write(ref, secret, cas=0, custom_metadata={"key_id": "k1"}) == 1
        assert store.read_current(ref).secret == secret
        # Its token is revoked (as if expired): the next call gets 403, logs in, succeeds.
        openbao_root_client.sys.revoke_prefix(f"auth/{approle['mount']}/")  # type: ignore[no-untyped-call]
        assert store.read_current(ref).secret == secret
        # Without the policy's reach, the 403 stays a VaultError after the one re-login.
        with pytest.raises(VaultError) as caught:
            store.read_current(SecretRef("secret", "elsewhere", "api_key"))
        assert caught.value.context["status"] == "403"
        assert_clean(caught.value, auth.secret_id.reveal(), secret.reveal())
        assert auth.secret_id.reveal() not in repr(store)
    assert list(tmp_path.iterdir()) == []

    wrong = AppRoleAuth(auth.role_id, Secret(secrets.token_hex(16)), mount=auth.mount)
    with VaultStore(openbao.url, wrong, retry=NO_RETRY) as store:
        assert not store.is_ready()
        with pytest.raises(VaultError) as caught:
            store.read_current(ref)
        assert caught.value.context["operation"] == "login"
        assert_clean(caught.value, wrong.secret_id.reveal())


@pytest.mark.parametrize("settings", [
    {"token_type": "batch", "token_ttl": "2m"},        # not renewable at all
    {"token_ttl": "2m", "token_max_ttl": "2m"},        # renewable, but stuck at its max TTL
], ids=["batch", "max-ttl"])
def test_approle_logs_in_again_when_renewal_cannot_help(
        openbao: OpenBao, approle: dict[str, str], openbao_root_client: hvac.Client,
        settings: dict[str, str]) -> None:
    auth = make_role(openbao_root_client, approle, "short", **settings)
    with VaultStore(openbao.url, auth, retry=NO_RETRY) as store:
        store.login()
        assert store.renew_if_needed(min_ttl_seconds=60) == "unchanged"
        assert store.renew_if_needed(min_ttl_seconds=3600) == "relogged_in"
        assert store.is_ready()


def test_token_renewal(openbao: OpenBao, openbao_root_client: hvac.Client) -> None:
    tokens = openbao_root_client.auth.token
    token = tokens.create(policies=["default"], ttl="60s", renewable=True)["auth"]["client_token"]
    tokens.renew(token, increment=10)  # now 10s left; renewing restores its 60s TTL
    with VaultStore(openbao.url, TokenAuth(Secret(token)), retry=NO_RETRY) as store:
        assert store.renew_if_needed(min_ttl_seconds=5) == "unchanged"
        assert tokens.lookup(token)["data"]["ttl"] <= 10
        assert store.renew_if_needed(min_ttl_seconds=30) == "renewed"
        assert tokens.lookup(token)["data"]["ttl"] > 50
    with VaultStore(openbao.url, TokenAuth(Secret(openbao.root_token))) as root_store:
        assert root_store.renew_if_needed(min_ttl_seconds=10**9) == "unchanged"  # never expires


def test_renewal_decision() -> None:
    decide = renewal_action
    assert decide(ttl=0, renewable=False, relogin_possible=True, min_ttl=300) == "none"
    assert decide(ttl=900, renewable=True, relogin_possible=True, min_ttl=300) == "none"
    assert decide(ttl=60, renewable=True, relogin_possible=False, min_ttl=300) == "renew"
    assert decide(ttl=60, renewable=False, relogin_possible=True, min_ttl=300) == "relogin"
    assert decide(ttl=60, renewable=False, relogin_possible=False, min_ttl=300) == "none"


def test_unreachable_vault_after_retry_budget(stopped_vault_url: str) -> None:
    ref = SecretRef("kv", "count/prod", "api_key")
    sleeps: list[float] = []
    token, secret = secrets.token_hex(16), key()
    with VaultStore(stopped_vault_url, TokenAuth(Secret(token)), retry=TINY_RETRY,
                    sleep=sleeps.append, timeout=2) as store:
        assert not store.is_ready()
        for action in (lambda: store.read_current(ref),
                       lambda: store.write(ref, secret, cas=0, custom_metadata={}),
                       store.login, store.renew_if_needed):
            sleeps.clear()
            with pytest.raises(VaultUnavailable) as caught:
                action()
            assert caught.value.context["attempts"] == "3"
            assert len(sleeps) == 2
            assert_clean(caught.value, token, secret.reveal())


def test_sealed_stopped_and_restarted_server(tmp_path: Path) -> None:
    ref = SecretRef("kv", "count/prod", "api_key")
    server = start_openbao(tmp_path)
    try:
        with VaultStore(server.url, TokenAuth(Secret(server.root_token)),
                        retry=TINY_RETRY, sleep=lambda _s: None) as store:
            assert store.is_ready()
            root = vault_client(server)
            root.sys.seal()  # type: ignore[no-untyped-call]
            root.adapter.close()
            assert not store.is_ready()
            with pytest.raises(VaultUnavailable, match="sealed") as sealed:
                store.read_current(ref)
            assert sealed.value.context["status"] == "503"
            stop_openbao(server)
            with pytest.raises(VaultUnavailable, match="unreachable") as down:
                store.read_current(ref)
            server = restart_openbao(server)
            assert store.is_ready()  # same port, same root token
            for caught in (sealed, down):
                assert_clean(caught.value, server.root_token)
    finally:
        stop_openbao(server)


class _StatusServer(ThreadingHTTPServer):
    status = 504


class _StatusHandler(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "13")
        self.end_headers()
        self.wfile.write(b'{"errors":[]}')

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def status_server() -> Iterator[_StatusServer]:
    server = _StatusServer(("127.0.0.1", 0), _StatusHandler)
    with serving(server):
        yield server


@pytest.mark.parametrize(("status", "expected"), [
    (504, VaultUnavailable), (500, VaultUnavailable), (429, VaultUnavailable),
    (405, VaultError), (400, VaultError),
])
def test_status_translation(status_server: _StatusServer, status: int,
                            expected: type[RotatorError]) -> None:
    ref = SecretRef("kv", "count/prod", "api_key")
    status_server.status = status
    token = secrets.token_hex(16)
    url = f"http://127.0.0.1:{status_server.server_address[1]}"
    with VaultStore(url, TokenAuth(Secret(token)), retry=NO_RETRY) as store:
        with pytest.raises(RotatorError) as caught:
            store.read_current(ref)
        assert type(caught.value) is expected
        assert caught.value.context["status"] == str(status)
        assert_clean(caught.value, token)


class _FlakyWrites(HTTPAdapter):
    """Sends the first KV data write, then pretends its response timed out."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def send(self, request: requests.PreparedRequest, stream: bool = False,
             timeout: float | tuple[float | None, float | None] | None = None,
             verify: bool | str = True, cert: str | tuple[str, str] | None = None,
             proxies: dict[str, str] | None = None) -> requests.Response:
        response = super().send(request, stream, timeout, verify, cert, proxies)
        if request.method in ("POST", "PUT") and "/data/" in (request.url or "") \
                and not self.failed:
            self.failed = True
            response.close()
            raise requests.ReadTimeout("read timed out")
        return response


def test_write_whose_response_was_lost_is_recognised(openbao: OpenBao, ref: SecretRef) -> None:
    sleeps: list[float] = []
    with VaultStore(openbao.url, TokenAuth(Secret(openbao.root_token)), retry=TINY_RETRY,
                    sleep=sleeps.append) as store:
        store.write(ref, key(), cas=0, custom_metadata={})
        session = store._session.client.session
        session.get_adapter("http://").close()
        flaky = _FlakyWrites()
        session.mount("http://", flaky)
        secret = key()
        # attempt 1 lands but "times out"; attempt 2 meets its own write as a CAS conflict
        assert store.write(ref, secret, cas=1, custom_metadata={"key_id": "k2"}) == 2
        assert flaky.failed
        assert len(sleeps) == 1
        current = store.read_current(ref)
        assert (current.version, current.secret, current.custom_metadata) == (
            2, secret, {"key_id": "k2"})
        # a genuine conflict after a retry is still a conflict
        flaky.failed = False
        with pytest.raises(CasConflict):
            store.write(ref, key(), cas=1, custom_metadata={})


def test_kubernetes_login(openbao: OpenBao, tmp_path: Path,
                          openbao_root_client: hvac.Client) -> None:
    ref = SecretRef("kv", "count/prod", "api_key")
    missing = tmp_path / "no-such-token"
    with VaultStore(openbao.url, KubernetesAuth("rotator", jwt_path=str(missing)),
                    retry=NO_RETRY) as store:
        assert not store.is_ready()
        with pytest.raises(VaultError) as caught:
            store.read_current(ref)
        assert caught.value.context["jwt_path"] == str(missing)
        assert_clean(caught.value)
    # A readable JWT reaches Vault's kubernetes login, which refuses it (no cluster here).
    jwt = f"eyJhbGciOiJSUzI1NiJ9.{secrets.token_urlsafe(32)}.{secrets.token_urlsafe(32)}"
    jwt_file = tmp_path / "token"
    jwt_file.write_text(jwt + "\n")
    mount = f"k8s-{uuid.uuid4().hex[:12]}"
    openbao_root_client.sys.enable_auth_method("kubernetes", path=mount)
    try:
        auth = KubernetesAuth("rotator", jwt_path=str(jwt_file), mount=mount)
        with VaultStore(openbao.url, auth, retry=NO_RETRY) as store:
            with pytest.raises(VaultError) as refused:
                store.login()
            assert refused.value.context["auth_mount"] == mount
            assert_clean(refused.value, jwt)
    finally:
        openbao_root_client.sys.disable_auth_method(mount)  # type: ignore[no-untyped-call]


def test_sixteen_threads_at_once_reuse_their_vault_connections(
        store: VaultStore, ref: SecretRef, caplog: pytest.LogCaptureFixture) -> None:
    """Sixteen workers reading Vault at once keep their connections (a pool of 10 closed
    and reopened them: urllib3's "Connection pool is full, discarding connection")."""
    store.write(ref, key(), cas=0, custom_metadata={})

    def read() -> None:
        for _ in range(5):
            store.read_current(ref)

    with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
        assert all_at_once(16, read) == []
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()], caplog.text
