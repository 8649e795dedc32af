"""Security defaults, end to end: TLS verification on by default with a configurable CA
bundle (Vault and Count), plain http:// refused for a non-loopback host unless allowed,
the Vault token (or AppRole secret id) never written to disk, and an audit database that
never holds a secret, only short SHA-256 fingerprints.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import secrets
import select
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import hvac
import pytest
import structlog
from sqlalchemy import text

from rotator.adapters.sql.schema import make_engine, upgrade
from rotator.adapters.vault.auth import AppRoleAuth, KubernetesAuth
from rotator.adapters.vault.store import VaultStore
from rotator.config.model import load_config
from rotator.core.errors import ConfigError
from rotator.core.secret import FINGERPRINT_LENGTH, Secret, fingerprint
from rotator.devtools.devvault import find_bao, free_port
from rotator.emulator import Emulator, EmulatorSettings
from rotator.logs import configure_logging
from rotator.redaction import is_remembered
from tests.fixtures.openbao import OpenBao
from tests.integration.conftest import MakeWorld
from tests.integration.daemon_process import daemon_config
from tests.integration.world import World, build_world

pytestmark = pytest.mark.integration

ROTATOR_SOURCE = Path(__file__).resolve().parents[2] / "rotator"
# The shapes of OpenBao/Vault tokens (as rotator/redaction.py masks them).
TOKEN_SHAPE = re.compile(rb"\b(?:hvs|hvb|hvr|s|b)\.[A-Za-z0-9_-]{20,}")
FINGERPRINT = re.compile(rf"^sha256:[0-9a-f]{{{FINGERPRINT_LENGTH}}}$")
CHAIN_HASH = re.compile(r"^(sha256|hmac-sha256):[0-9a-f]{64}$")


def _sqlite(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'rotator.db'}"
    upgrade(url)
    return url


def _with_vault_ca(config: Path, ca: Path) -> None:
    lines = config.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip() == "[vault]")
    lines.insert(at + 2, f'ca_bundle = "{ca}"')          # after the url
    config.write_text("\n".join(lines) + "\n")


def _replace(config: Path, old: str, new: str) -> None:
    body = config.read_text()
    assert old in body, old
    config.write_text(body.replace(old, new))


# --- TLS material and a TLS-terminating proxy -------------------------------------------------

@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path


def make_pki(directory: Path) -> Pki:
    """A throwaway CA and a server certificate for localhost and 127.0.0.1 (openssl CLI)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the openssl command is needed to make test certificates", pytrace=False)
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr = directory / "server.pem", directory / "server.key", directory / "server.csr"
    ext = directory / "server.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                   "basicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for argv in (
        [openssl, "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2",
         "-subj", "/CN=rotator test CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        [openssl, "req", "-new", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=localhost"],
        [openssl, "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "2", "-extfile", ext],
    ):
        done = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                              timeout=30, check=False)
        assert done.returncode == 0, done.stderr
    return Pki(ca, cert, key)


class TlsProxy:
    """Terminates TLS on a loopback port and forwards the plain bytes to ``target_port``."""

    def __init__(self, target_port: int, pki: Pki) -> None:
        self._target = target_port
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(pki.cert, pki.key)
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.05)
        self.port = self._server.getsockname()[1]
        self.handshakes_failed = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def close(self) -> None:
        self._stop.set()
        self._accepting.join(timeout=2)
        for thread in self._threads:
            thread.join(timeout=2)
        self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(raw,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(5)
        try:
            tls = self._context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            self.handshakes_failed += 1     # the client refused our certificate
            raw.close()
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self._target), timeout=5)
        except OSError:
            tls.close()
            return
        with contextlib.closing(tls), contextlib.closing(upstream):
            tls.settimeout(None)
            upstream.settimeout(None)
            peers = {tls: upstream, upstream: tls}
            while not self._stop.is_set():
                ready = [tls] if tls.pending() else select.select(list(peers), [], [], 0.1)[0]
                for sock in ready:
                    try:
                        data = sock.recv(65536)
                        if not data:
                            return
                        peers[sock].sendall(data)
                    except (OSError, ssl.SSLError):
                        return


# --- OpenBao with TLS (bao server -dev -dev-tls) ----------------------------------------------

@dataclass(frozen=True)
class TlsOpenBao:
    url: str
    root_token: str
    ca: Path
    process: subprocess.Popen[bytes]


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


def _healthy(url: str, ca: Path) -> bool:
    try:
        context = ssl.create_default_context(cafile=str(ca))
        return httpx.get(f"{url}/v1/sys/health", verify=context, timeout=1).status_code == 200
    except (httpx.HTTPError, OSError, ssl.SSLError):
        return False


@pytest.fixture
def tls_openbao(tmp_path: Path) -> Iterator[TlsOpenBao]:
    directory = tmp_path / "openbao-tls"
    directory.mkdir()
    token = f"root-{secrets.token_hex(16)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env["HOME"] = str(directory)
    for _ in range(3):   # the dev cluster listener takes port + 1, which may be busy
        port = free_port()
        certs = directory / f"certs-{port}"
        certs.mkdir()
        with (directory / f"bao-{port}.log").open("wb") as log:
            process = subprocess.Popen(
                [find_bao(), "server", "-dev", "-dev-tls", f"-dev-tls-cert-dir={certs}",
                 f"-dev-root-token-id={token}", "-dev-no-store-token",
                 f"-dev-listen-address=127.0.0.1:{port}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
        url, ca = f"https://127.0.0.1:{port}", certs / "vault-ca.pem"
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and process.poll() is None:
                if ca.exists() and _healthy(url, ca):
                    yield TlsOpenBao(url, token, ca, process)
                    return
                time.sleep(0.05)
        finally:
            _stop(process)
    pytest.fail("bao server -dev-tls did not become healthy:\n"
                + "\n".join(p.read_text(errors="replace")[-2000:]
                            for p in directory.glob("bao-*.log")), pytrace=False)


def test_vault_tls_is_verified_and_a_ca_bundle_makes_it_work(
        tls_openbao: TlsOpenBao, emulator: Emulator, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Seed the world through hvac trusting the dev CA; the rotator runs without it.
    with monkeypatch.context() as m:
        m.setenv("REQUESTS_CA_BUNDLE", str(tls_openbao.ca))
        w = build_world(emulator, tls_openbao.url, tls_openbao.root_token, "secret",
                        _sqlite(tmp_path), tmp_path, ("app",), grace="0s")
    assert "ca_bundle" not in w.config_path.read_text()

    dry = w.cli("rotate", "--dry-run", "app")
    assert dry.returncode == 1, dry.stdout + dry.stderr
    assert "would refuse" in dry.stdout and "TLS" in dry.stdout, dry.stdout
    refused = w.cli("rotate", "app")
    assert refused.returncode == 1, refused.stderr[-3000:]
    assert "TLS" in refused.stdout + refused.stderr
    # Classified as permanent: refused at once, not retried until a budget ran out.
    assert "attempts=" not in refused.stdout
    assert emulator.state.counters().creates == {}

    _with_vault_ca(w.config_path, tls_openbao.ca)
    done = w.cli("rotate", "app")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    client = hvac.Client(url=tls_openbao.url, token=tls_openbao.root_token,
                         verify=str(tls_openbao.ca))
    try:
        got = client.secrets.kv.v2.read_secret_version(path="count/app", mount_point="secret",
                                                       raise_on_deleted_version=True)
    finally:
        client.adapter.close()
    served = got["data"]["data"]["api_key"]
    assert served != w.accounts["app"].secret
    assert w.whoami(served).status_code == 200
    assert w.whoami(w.accounts["app"].secret).status_code == 401


def test_count_tls_is_verified_and_a_ca_bundle_makes_it_work(
        openbao: OpenBao, vault_mount: str, emulator: Emulator, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    proxy = TlsProxy(emulator.port, pki)
    try:
        w = build_world(emulator, openbao.url, openbao.root_token, vault_mount,
                        _sqlite(tmp_path), tmp_path, ("app",), grace="0s")
        _replace(w.config_path, f'base_url = "{emulator.url}"',
                 f'base_url = "https://localhost:{proxy.port}"')

        dry = w.cli("rotate", "--dry-run", "app")
        assert dry.returncode == 1, dry.stdout + dry.stderr
        line = next(x for x in dry.stdout.splitlines() if "would refuse" in x)
        assert "TLS" in line and "certificate" in line, line
        assert "attempts=" not in line   # a verification failure is not worth retrying
        assert proxy.handshakes_failed >= 1
        refused = w.cli("rotate", "app")
        assert refused.returncode == 1
        assert "TLS" in refused.stdout, refused.stdout

        _replace(w.config_path, f'base_url = "https://localhost:{proxy.port}"',
                 f'base_url = "https://localhost:{proxy.port}"\nca_bundle = "{pki.ca}"')
        done = w.cli("rotate", "app")
        assert done.returncode == 0, done.stdout + done.stderr[-3000:]
        w.assert_invariants("app")
        _, served, _ = w.vault_secret("app")
        assert served != w.accounts["app"].secret
    finally:
        proxy.close()


def test_no_tls_verification_is_switched_off_anywhere() -> None:
    pattern = re.compile(r"verify\s*=\s*False|CERT_NONE|check_hostname\s*=\s*False"
                         r"|_create_unverified_context|disable_warnings")
    hits = [f"{path.relative_to(ROTATOR_SOURCE)}:{n}: {line.strip()}"
            for path in ROTATOR_SOURCE.rglob("*.py")
            for n, line in enumerate(path.read_text().splitlines(), start=1)
            if pattern.search(line)]
    assert not hits, hits


# --- plain http:// ------------------------------------------------------------------------------

CONFIG = """\
[vault]
url = "{vault}"
{vault_extra}
[vault.auth]
method = "token"
token_env = "SD_VAULT_TOKEN"

[providers.count]
type = "count"
base_url = "{count}"
management_key_env = "SD_COUNT_KEY"
{count_extra}

[targets.app]
provider = "count"
service_account = "sa_1"
vault_path = "count/app"
"""
SECURE = "https://vault.example.com:8200", "https://api.count.example"


def _config(tmp_path: Path, vault: str = SECURE[0], count: str = SECURE[1], *,
            vault_extra: str = "", count_extra: str = "") -> Path:
    path = tmp_path / f"c-{uuid.uuid4().hex[:8]}.toml"
    path.write_text(CONFIG.format(vault=vault, count=count, vault_extra=vault_extra,
                                  count_extra=count_extra))
    return path


def _check_config(path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SD_VAULT_TOKEN": "t-" + secrets.token_hex(8),
           "SD_COUNT_KEY": "k-" + secrets.token_hex(8)}
    return subprocess.run([sys.executable, "-m", "rotator", "check-config", str(path)],
                          env=env, capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize(("vault", "count", "keys"), [
    ("http://vault.example.com:8200", SECURE[1], ["vault"]),
    (SECURE[0], "http://api.count.example", ["providers.count"]),
    ("http://10.0.0.7:8200", "http://192.168.1.2", ["vault", "providers.count"]),
    ("http://127.0.0.1.example.com:8200", SECURE[1], ["vault"]),   # not loopback
])
def test_plain_http_to_a_remote_host_is_refused(tmp_path: Path, vault: str, count: str,
                                                keys: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_config(tmp_path, vault, count))
    assert sorted(caught.value.problems) == sorted(keys)
    for key in keys:
        assert "allow_insecure_http" in caught.value.problems[key]
    result = _check_config(_config(tmp_path, vault, count))
    assert result.returncode == 2, result.stderr
    for key in keys:
        assert f"  {key}: plain http://" in result.stderr, result.stderr
    assert "allow_insecure_http" in result.stderr


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "127.0.0.2"])
def test_plain_http_to_loopback_is_accepted(tmp_path: Path, host: str) -> None:
    path = _config(tmp_path, f"http://{host}:8200", f"http://{host}:9100")
    config = load_config(path)
    assert config.vault.url == f"http://{host}:8200"
    assert config.providers["count"].base_url == f"http://{host}:9100"


def test_allow_insecure_http_is_an_explicit_opt_in_per_url(tmp_path: Path) -> None:
    remote = ("http://vault.example.com:8200", "http://api.count.example")
    both = _config(tmp_path, *remote, vault_extra="allow_insecure_http = true",
                   count_extra="allow_insecure_http = true")
    result = _check_config(both)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
    # The opt-in of one URL does not cover the other.
    only_vault = _config(tmp_path, *remote, vault_extra="allow_insecure_http = true")
    with pytest.raises(ConfigError) as caught:
        load_config(only_vault)
    assert list(caught.value.problems) == ["providers.count"]
    # And it is off unless written.
    assert load_config(_config(tmp_path)).vault.allow_insecure_http is False
    assert load_config(_config(tmp_path)).providers["count"].allow_insecure_http is False
    assert load_config(_config(tmp_path)).vault.ca_bundle is None


# --- nothing written to disk ------------------------------------------------------------------

def _files_under(*roots: Path) -> Iterator[Path]:
    seen: set[Path] = set()
    for root in roots:
        for path in [root, *root.rglob("*")] if root.is_dir() else [root]:
            if path.is_file() and not path.is_symlink() and path not in seen:
                seen.add(path)
                yield path


def _run_isolated(w: World, argv: list[str], home: Path, tmpdir: Path, cwd: Path,
                  env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env={**w.env, "HOME": str(home), "TMPDIR": str(tmpdir), **(env or {})},
        cwd=cwd, capture_output=True, text=True, timeout=90, check=False)


def _rotate_and_run_once(w: World, tmp_path: Path,
                         env: dict[str, str] | None = None) -> tuple[Path, Path, Path]:
    home, tmpdir, cwd = (tmp_path / d for d in ("home", "tmpdir", "cwd"))
    for d in (home, tmpdir, cwd):
        d.mkdir(exist_ok=True)
    rotated = _run_isolated(w, w.cli_args("rotate", "app"), home, tmpdir, cwd, env)
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr[-3000:]
    config, _ = daemon_config(w, "once")
    once = _run_isolated(w, [sys.executable, "-m", "rotator", "--config", str(config),
                             "--log-format", "json", "--log-level", "debug",
                             "run", "--once", "--rotate-all"], home, tmpdir, cwd, env)
    assert once.returncode == 0, once.stdout + once.stderr[-3000:]
    # Both really rotated, so the token was in use all along.
    account = w.accounts["app"].account_id
    assert w.emulator.state.counters().creates[account] == 2
    (tmp_path / "outputs.log").write_text("\n".join(
        [rotated.stdout, rotated.stderr, once.stdout, once.stderr]))
    return home, tmpdir, cwd


def _assert_absent(values: list[bytes], roots: list[Path], *, token_shapes: bool) -> int:
    files = list(_files_under(*roots))
    for path in files:
        data = path.read_bytes()
        leaked = [v[:6] for v in values if v in data]
        assert not leaked, f"{path} holds a secret starting {leaked}"
        if token_shapes:
            shaped = TOKEN_SHAPE.findall(data)
            assert not shaped, f"{path} holds token-shaped strings {[s[:6] for s in shaped]}"
    return len(files)


def test_the_vault_token_is_never_written_to_disk(openbao: OpenBao, vault_mount: str,
                                                  emulator: Emulator, tmp_path: Path) -> None:
    w = build_world(emulator, openbao.url, openbao.root_token, vault_mount, _sqlite(tmp_path),
                    tmp_path, ("app",), grace="0s")
    home, tmpdir, cwd = _rotate_and_run_once(w, tmp_path)
    assert not (home / ".vault-token").exists()
    assert not (home / ".bao-token").exists()
    # tmp_path holds the config files, the SQLite database, the daemon's log and the
    # outputs of both commands; home, tmpdir and cwd are under it.
    assert (tmp_path / "rotator.db").is_file()
    scanned = _assert_absent([w.vault_token.encode()], [tmp_path, home, tmpdir, cwd],
                             token_shapes=False)
    assert scanned >= 4
    assert b'"event": "rotation_completed"' in (tmp_path / "outputs.log").read_bytes()


@pytest.fixture
def approle_login(openbao_root_client: hvac.Client, vault_mount: str) -> Iterator[
        tuple[str, str, str]]:
    """(auth mount, role id, secret id) of an AppRole allowed to rotate in ``vault_mount``."""
    client = openbao_root_client
    mount = f"approle-{uuid.uuid4().hex[:12]}"
    policy = f"rotator-{mount}"
    client.sys.enable_auth_method("approle", path=mount)
    client.sys.create_or_update_policy(policy, f"""
        path "{vault_mount}/data/*" {{ capabilities = ["read", "update"] }}
        path "{vault_mount}/metadata/*" {{ capabilities = ["update"] }}
    """)
    try:
        client.auth.approle.create_or_update_approle("rotator", token_policies=[policy],
                                                     mount_point=mount)
        role_id = client.auth.approle.read_role_id("rotator", mount_point=mount)
        secret_id = client.auth.approle.generate_secret_id("rotator", mount_point=mount)
        yield mount, role_id["data"]["role_id"], secret_id["data"]["secret_id"]
    finally:
        client.sys.disable_auth_method(mount)  # type: ignore[no-untyped-call]
        client.sys.delete_policy(policy)  # type: ignore[no-untyped-call]


def test_an_approle_secret_id_and_its_tokens_are_never_written_to_disk(
        openbao: OpenBao, vault_mount: str, emulator: Emulator, tmp_path: Path,
        approle_login: tuple[str, str, str]) -> None:
    mount, role_id, secret_id = approle_login
    # What a token of this OpenBao looks like, so the shape scan below is meaningful.
    probe = hvac.Client(url=openbao.url)
    try:
        issued = probe.auth.approle.login(role_id, secret_id, mount_point=mount)
    finally:
        probe.adapter.close()
    sample = issued["auth"]["client_token"].encode()
    assert TOKEN_SHAPE.fullmatch(sample), sample[:4]

    w = build_world(emulator, openbao.url, openbao.root_token, vault_mount, _sqlite(tmp_path),
                    tmp_path, ("app",), grace="0s")
    _replace(w.config_path, 'method = "token"\ntoken_env = "IT_VAULT_TOKEN"',
             f'method = "approle"\nrole_id = "{role_id}"\nmount = "{mount}"\n'
             'secret_id_env = "IT_SECRET_ID"')
    home, tmpdir, cwd = _rotate_and_run_once(w, tmp_path, {"IT_SECRET_ID": secret_id,
                                                           "IT_VAULT_TOKEN": ""})
    assert not (home / ".vault-token").exists()
    scanned = _assert_absent([secret_id.encode(), sample, w.vault_token.encode()],
                             [tmp_path, home, tmpdir, cwd], token_shapes=True)
    assert scanned >= 4


# --- the audit database -------------------------------------------------------------------------

def dump_columns(url: str) -> dict[tuple[str, str], list[object]]:
    """Every value of every column of every table, read through the database's catalog."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                tables = conn.execute(text(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite_%'")).scalars().all()
            else:
                tables = conn.execute(text(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
                )).scalars().all()
            dump: dict[tuple[str, str], list[object]] = {}
            for table in tables:
                result = conn.execute(text(f'SELECT * FROM "{table}"'))
                columns = list(result.keys())
                rows = result.all()
                for i, column in enumerate(columns):
                    dump[(table, column)] = [row[i] for row in rows]
            return dump
    finally:
        engine.dispose()


def test_the_audit_database_never_holds_a_secret(make_world: MakeWorld) -> None:
    w = make_world("ok", "rollback", "crash", grace="0s", probe_timeout="500ms")
    outputs: list[str] = []

    def run(*args: str, crash_at: str | None = None, code: int | None = 0) -> None:
        result = w.cli(*args, crash_at=crash_at)
        outputs.append(result.stdout + result.stderr)
        if code is not None:
            assert result.returncode == code, (args, result.stdout, result.stderr[-3000:])

    run("rotate", "ok")                                             # success
    w.emulator.settings = EmulatorSettings(propagation_delay=30)
    run("rotate", "rollback", code=1)                               # verify fails: rollback
    w.emulator.settings = EmulatorSettings()
    run("rotate", "crash", crash_at="vault_write:after", code=None)  # killed mid-store
    run("rotate", "crash", "--wait-lease", "5s")                    # resumed
    run("rotate", "crash", crash_at="create_key:after", code=None)  # the secret dies with it
    run("rotate", "crash", "--wait-lease", "5s")                    # deleted, created again
    for name in ("ok", "crash"):
        w.assert_invariants(name)

    dump = dump_columns(w.db_url)
    tables = {table for table, _ in dump}
    assert {"rotations", "rotation_events", "leases", "pending_cleanups"} <= tables
    statuses = dump[("rotations", "status")]
    assert statuses.count("completed") == 3 and statuses.count("rolled_back") == 1, statuses

    secrets_ = [*w.emulator.state.issued_secrets(), w.vault_token, w.admin.secret]
    assert len(secrets_) >= 9
    for (table, column), values in dump.items():
        for value in values:
            if isinstance(value, str):
                leaked = [s[:6] for s in secrets_ if s in value]
                assert not leaked, f"{table}.{column} holds a secret ({leaked})"
                if (table, column) == ("rotation_events", "chain_hash"):
                    # A hash over the row (which holds no secret) and the previous hash.
                    assert CHAIN_HASH.match(value), f"{table}.{column}: {value!r}"
                    continue
                for found in re.findall(r"sha256:[0-9a-zA-Z]*", value):
                    assert FINGERPRINT.match(found), f"{table}.{column}: {found!r}"
    for key in (("rotations", "new_fingerprint"), ("rotation_events", "fingerprint")):
        present = [v for v in dump[key] if v is not None]
        assert present, key
        for value in present:
            assert isinstance(value, str) and FINGERPRINT.match(value), (key, value)

    # The scan looked at real data: each key Vault now serves is in the audit by its
    # fingerprint, and so is the one that was rolled back.
    recorded = set(dump[("rotation_events", "fingerprint")])
    for name in ("ok", "crash"):
        _, served, _ = w.vault_secret(name)
        assert fingerprint(served) in recorded, name
    rolled_back = set(dump[("rotations", "new_fingerprint")]) - {
        fingerprint(w.vault_secret(n)[1]) for n in ("ok", "crash")}
    assert rolled_back & {fingerprint(s) for s in w.emulator.state.issued_secrets()}
    joined = "\n".join(outputs)
    assert not [s for s in secrets_ if s in joined]


# --- one source per secret; the redaction registry (review findings 2, 9, 10) -------------

def test_token_file_is_used_even_with_a_vault_token_in_the_environment(
        openbao: OpenBao, vault_mount: str, emulator: Emulator, tmp_path: Path) -> None:
    # Finding 2: token_env defaulted to VAULT_TOKEN and the environment won, so an
    # operator's own (broad, or here: wrong) token replaced the one the file holds.
    w = build_world(emulator, openbao.url, openbao.root_token, vault_mount, _sqlite(tmp_path),
                    tmp_path, ("app",), grace="0s")
    token_file = tmp_path / "vault-token"
    token_file.write_text(w.vault_token + "\n")
    token_file.chmod(0o600)
    _replace(w.config_path, 'token_env = "IT_VAULT_TOKEN"', f'token_file = "{token_file}"')
    env = {**w.env, "IT_VAULT_TOKEN": "", "VAULT_TOKEN": "s.operatorsOwnTokenNotThisOne0"}
    checked = subprocess.run(w.cli_args("check-config"), env=env, capture_output=True,
                             text=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stderr[-3000:]
    rotated = subprocess.run(w.cli_args("rotate", "app"), env=env, capture_output=True,
                             text=True, timeout=60, check=False)
    assert rotated.returncode == 0, rotated.stderr[-3000:]
    w.assert_invariants("app")


def _echo_the_login_token(store: VaultStore) -> tuple[str, str]:
    """Log in, then log a line quoting the issued token: (the token, the log)."""
    stream = io.StringIO()
    configure_logging("json", "debug", stream)
    try:
        store.login()
        token = store._session.client.token   # the token the login issued
        assert TOKEN_SHAPE.fullmatch(token.encode())
        # Quoted where no shape pattern sees it (glued to other text): only the registry
        # of secrets this process handled can mask it.
        structlog.get_logger("t").warning("upstream echoed", detail=f"session{token}")
    finally:
        store.close()
    log = stream.getvalue()
    assert "upstream echoed" in log
    return token, log


def test_the_token_an_approle_login_issues_is_masked_from_the_moment_it_arrives(
        openbao: OpenBao, approle_login: tuple[str, str, str]) -> None:
    mount, role_id, secret_id = approle_login
    store = VaultStore(openbao.url, AppRoleAuth(role_id, Secret(secret_id), mount))
    token, log = _echo_the_login_token(store)
    assert token not in log and token[2:] not in log and secret_id not in log


SERVICE_ACCOUNT = "system:serviceaccount:default:rotator"


def _b64url(claims: dict[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()


@contextlib.contextmanager
def _token_review_api(jwt: str, uid: str) -> Iterator[str]:
    """A stand-in for the Kubernetes TokenReview API: ``jwt`` is service account
    default/rotator. Yields its URL."""

    class Reviewer(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            data = json.dumps({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                               "status": {"authenticated": body["spec"]["token"] == jwt,
                                          "user": {"username": SERVICE_ACCOUNT, "uid": uid,
                                                   "groups": []}}}).encode()
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Reviewer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_token_a_kubernetes_login_issues_is_masked_from_the_moment_it_arrives(
        openbao: OpenBao, openbao_root_client: hvac.Client, tmp_path: Path) -> None:
    uid = str(uuid.uuid4())
    jwt = ".".join([_b64url({"alg": "RS256", "kid": "1"}), _b64url({
        "iss": "kubernetes/serviceaccount", "sub": SERVICE_ACCOUNT,
        "kubernetes.io/serviceaccount/namespace": "default",
        "kubernetes.io/serviceaccount/service-account.name": "rotator",
        "kubernetes.io/serviceaccount/service-account.uid": uid}), secrets.token_urlsafe(32)])
    jwt_path = tmp_path / "sa-token"
    jwt_path.write_text(jwt + "\n")
    mount = f"k8s-{uuid.uuid4().hex[:12]}"
    client = openbao_root_client
    client.sys.enable_auth_method("kubernetes", path=mount)
    try:
        with _token_review_api(jwt, uid) as api:
            # OpenBao wants a CA for the API even over http; any certificate will do.
            client.auth.kubernetes.configure(
                kubernetes_host=api, disable_local_ca_jwt=True, mount_point=mount,
                kubernetes_ca_cert=make_pki(tmp_path / "pki").ca.read_text())
            client.auth.kubernetes.create_role(
                "rotator", bound_service_account_names=["rotator"],
                bound_service_account_namespaces=["default"], mount_point=mount)
            store = VaultStore(openbao.url, KubernetesAuth("rotator", str(jwt_path), mount))
            token, log = _echo_the_login_token(store)
    finally:
        client.sys.disable_auth_method(mount)  # type: ignore[no-untyped-call]
    assert token not in log and token[2:] not in log


def test_a_revoked_key_leaves_the_redaction_registry(make_world: MakeWorld) -> None:
    # Finding 10: every secret the process handled stayed in the registry for good.
    w = make_world("app", grace="0s")
    old = w.accounts["app"].secret
    code, out = w.cli_here("rotate", "app")
    assert code == 0, out
    _, new, _ = w.vault_secret("app")
    assert new != old and old not in {k.secret for k in w.emulator.state.keys(
        w.accounts["app"].account_id)}
    assert not is_remembered(old), "the revoked key is still scanned for in every log line"
    assert is_remembered(new)
    w.assert_invariants("app")
