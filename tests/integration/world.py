"""A whole rotator world for integration tests: emulator accounts, keys in real OpenBao,
a config file, and a migrated database (SQLite or PostgreSQL).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import hvac

from rotator.adapters.sql.repository import SqlRepository
from rotator.adapters.sql.schema import make_engine
from rotator.cli.main import main
from rotator.core.model import TERMINAL_STATUSES, Rotation, Status
from rotator.core.secret import Secret
from rotator.core.vocabulary import AuditAction, EventKind
from rotator.emulator import Emulator, SeededAccount
from tests.fixtures.emulator import ALT_SHAPE

CONFIG = """\
[database]
url = "{db_url}"

[vault]
url = "{vault_url}"
timeout = "5s"
[vault.auth]
{auth}
[vault.retry]
max_attempts = 3
base_delay = "50ms"
max_elapsed = "2s"

[providers.{provider}]
type = "{provider_type}"
base_url = "{count_url}"
auth_mode = "{auth_mode}"
timeout = "5s"
{management}{shape}
[providers.{provider}.retry]
max_attempts = 6
base_delay = "20ms"
max_delay = "200ms"
max_elapsed = "5s"

[defaults]
grace = "{grace}"
lease_ttl = "1s"
[defaults.probe]
timeout = "{probe_timeout}"
interval = "50ms"
{targets}"""

TOKEN_AUTH = 'method = "token"\ntoken_env = "IT_VAULT_TOKEN"'
ADMIN_MANAGEMENT = 'management_key_env = "IT_COUNT_ADMIN_KEY"'


# The provider kinds a parametrized integration test runs on: Count's own adapter against
# the emulator, and type = "http" against the emulator's alt layout.
PROVIDER_KINDS = ("count", "http")

TARGET = """
[targets.{name}]
provider = "{provider}"
service_account = "{sa}"
vault_mount = "{mount}"
vault_path = "{path}"
"""


@dataclass
class World:
    emulator: Emulator
    vault_url: str
    vault_token: str
    mount: str
    db_url: str
    config_path: Path
    admin: SeededAccount
    accounts: dict[str, SeededAccount] = field(default_factory=dict)
    # The password this test process logs in with where the URL's server asks for one
    # (the CLI it starts reads the config's password_file instead).
    db_password: Secret | None = None
    provider_kind: str = "count"   # "http": the generic provider on the alt layout

    @property
    def secrets_env(self) -> dict[str, str]:
        """The variables the config reads its secrets from."""
        return {"IT_VAULT_TOKEN": self.vault_token, "IT_COUNT_ADMIN_KEY": self.admin.secret}

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, **self.secrets_env}

    def vault(self) -> hvac.Client:
        return hvac.Client(url=self.vault_url, token=self.vault_token)

    def vault_secret(self, name: str) -> tuple[int, str, dict[str, str]]:
        client = self.vault()
        try:
            got = client.secrets.kv.v2.read_secret_version(
                path=f"count/{name}", mount_point=self.mount, raise_on_deleted_version=True)
            meta = client.secrets.kv.v2.read_secret_metadata(path=f"count/{name}",
                                                             mount_point=self.mount)
        finally:
            client.adapter.close()
        return (got["data"]["metadata"]["version"], got["data"]["data"]["api_key"],
                meta["data"].get("custom_metadata") or {})

    def wait_for_new_secret(self, name: str, old: str, timeout: float = 30) -> str:
        """The secret Vault serves once a rotation has stored one other than ``old``."""
        deadline = time.monotonic() + timeout
        while (current := self.vault_secret(name)[1]) == old:
            assert time.monotonic() < deadline, "the new key never reached Vault"
            time.sleep(0.05)
        return current

    def whoami(self, secret: str) -> httpx.Response:
        """The emulator's whoami, in its layout: 200 or 401 (``key_id_of`` reads it)."""
        if self.provider_kind == "http":
            return httpx.get(f"{self.emulator.url}/api/2/me",
                             headers={"X-Auth-Token": f"Key {secret}"}, timeout=5)
        return httpx.get(f"{self.emulator.url}/v1/whoami",
                         headers={"Authorization": f"Bearer {secret}"}, timeout=5)

    def key_id_of(self, secret: str) -> str:
        """The id of the key ``secret`` is, as the provider's whoami says (it must work)."""
        who = self.whoami(secret)
        assert who.status_code == 200, who.text
        body = who.json()
        return str(body["data"]["credential"] if self.provider_kind == "http"
                   else body["result"]["key_id"])

    def live_key_ids(self, name: str) -> set[str]:
        account = self.accounts[name]
        return {k.key_id for k in self.emulator.state.keys(account.account_id)}

    def cli_args(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "rotator", "--config", str(self.config_path),
                "--log-format", "json", "--log-level", "debug", *args]

    def cli(self, *args: str, crash_at: str | None = None, timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``rotator ARGS`` as a process; ``env`` overrides the world's variables."""
        env = self.env | (env or {})
        if crash_at:
            env |= {"ROTATOR_TEST_HOOKS": "1", "ROTATOR_TEST_CRASH_AT": crash_at}
        return subprocess.run(
            self.cli_args(*args), env=env, capture_output=True, text=True, timeout=timeout,
            check=False)

    def cli_here(self, *args: str) -> tuple[int, str]:
        """The command line in this process (no interpreter to start): exit code, output."""
        out = io.StringIO()
        with _environ(self.secrets_env), contextlib.redirect_stdout(out):
            code = main(["--config", str(self.config_path), "--log-format", "json", *args])
        return code, out.getvalue()

    def cli_in_process(self, *args: str,
                       env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``cli``'s command and answer, run in this process: no interpreter to start and
        import (most of a command's cost on a loaded machine). For what a command prints
        and returns; a test of the process itself (its signals, a crash, a terminal, the
        entry point) runs it with ``cli``."""
        out, err = io.StringIO(), io.StringIO()
        with (_environ(self.secrets_env | (env or {})), contextlib.redirect_stdout(out),
              contextlib.redirect_stderr(err)):
            try:
                code = main(self.cli_args(*args)[3:])
            except SystemExit as usage:   # argparse's own exit, as the process would end
                code = usage.code if isinstance(usage.code, int) else 2
        return subprocess.CompletedProcess(self.cli_args(*args), code, out.getvalue(),
                                           err.getvalue())

    def verify(self) -> tuple[int, str]:
        """``rotator verify``, in this process: exit code, output."""
        return self.cli_here("verify")

    def repository(self) -> SqlRepository:
        return SqlRepository(make_engine(self.db_url, self.db_password))

    def rotations(self, target: str | None = None) -> list[Rotation]:
        """The rotations SQL holds (of ``target``), oldest first."""
        repo = self.repository()
        try:
            return repo.rotations(target)
        finally:
            repo.engine.dispose()

    def settled(self) -> bool:
        """No rotation running and no key queued for cleanup."""
        repo = self.repository()
        try:
            return not repo.all_running() and not repo.all_pending_cleanups()
        finally:
            repo.engine.dispose()

    def ending_problems(self) -> list[str]:
        """Each rotation that has not exactly one ending, its terminal status and the note
        spelt as that status (one of completed, rolled_back, failed)."""
        repo = self.repository()
        try:
            events, rotations = repo.events(), repo.rotations()
        finally:
            repo.engine.dispose()
        endings = {AuditAction(s.value) for s in TERMINAL_STATUSES}
        out = []
        for rot in rotations:
            notes = [e.action for e in events if e.rotation_id == rot.rotation_id
                     and e.kind is EventKind.NOTE and e.action in endings]
            if rot.status is Status.RUNNING or notes != [rot.status.value]:
                out.append(f"{rot.target} {rot.rotation_id} is {rot.status.value}, "
                           f"with the endings {notes}")
        return out

    def assert_invariants(self, name: str) -> None:
        """Vault's key authenticates, no key leaked, every side effect is paired."""
        _, secret, _ = self.vault_secret(name)
        served = self.key_id_of(secret)
        assert self.live_key_ids(name) == {served}, "a key leaked at the provider"
        repo = self.repository()
        try:
            events = repo.events(target=name)
        finally:
            repo.engine.dispose()
        closed = {e.op_id for e in events if e.kind is EventKind.OUTCOME}
        dangling = [e for e in events if e.kind is EventKind.INTENT and e.op_id not in closed]
        assert not dangling, dangling


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def build_world(emulator: Emulator, vault_url: str, vault_token: str, mount: str,
                db_url: str, tmp_path: Path, names: tuple[str, ...] = ("app",), *,
                grace: str = "300ms", probe_timeout: str = "5s",
                auth_mode: str = "admin", provider_kind: str = "count") -> World:
    """``provider_kind`` "http": the emulator is switched to its alt layout and the config
    drives it with a type = "http" provider."""
    if provider_kind == "http":
        emulator.settings = dataclasses.replace(emulator.settings, layout="alt")
    admin = emulator.seed_account("admin", role="admin")
    world = World(emulator, vault_url, vault_token, mount, db_url, tmp_path / "rotator.toml",
                  admin, provider_kind=provider_kind)
    client = hvac.Client(url=vault_url, token=vault_token)
    try:
        for name in names:
            account = emulator.seed_account(name)
            world.accounts[name] = account
            client.secrets.kv.v2.create_or_update_secret(
                path=f"count/{name}", secret={"api_key": account.secret, "note": "keep me"},
                mount_point=mount)
    finally:
        client.adapter.close()
    management = ADMIN_MANAGEMENT if auth_mode == "admin" else ""
    provider = "alt" if provider_kind == "http" else "count"
    targets = "".join(TARGET.format(name=n, sa=world.accounts[n].account_id, mount=mount,
                                    path=f"count/{n}", provider=provider) for n in names)
    world.config_path.write_text(CONFIG.format(
        db_url=db_url, vault_url=vault_url, count_url=emulator.url, auth_mode=auth_mode,
        management=management, grace=grace, probe_timeout=probe_timeout, targets=targets,
        auth=TOKEN_AUTH, provider=provider, provider_type=provider_kind,
        shape="\n" + ALT_SHAPE.rstrip() if provider_kind == "http" else ""))
    return world
