"""``deploy/vault/rotator-policy.hcl``, applied as shipped to real OpenBao, is enough and no more.

The policy is scoped to the dev server's KV v2 mount ``secret`` under ``rotator/``, so every
test keeps its target at ``secret/rotator/it-<hex>/app``. Rotations run through the real
CLI in a subprocess, authenticated with a token or an AppRole that carries only this policy.

- enough: a full rotation succeeds with a policy-only token (no default policy either) and
  with an AppRole bound to the policy; rotator's token lookup (readiness) and renewal work;
- no more: outside ``rotator/`` nothing is readable or writable; under it nothing can be
  listed, created, deleted, undeleted or destroyed, and metadata cannot be read or deleted;
- each grant is needed: the policy with one capability taken away breaks rotator.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import hvac
import pytest
from hvac import exceptions as hvac_errors

from rotator.adapters.sql.schema import upgrade
from rotator.adapters.vault.store import TokenAuth, VaultStore
from rotator.core.errors import VaultError
from rotator.core.secret import Secret
from rotator.emulator import Emulator, SeededAccount
from tests.fixtures.openbao import OpenBao
from tests.integration.world import ADMIN_MANAGEMENT, CONFIG, TARGET, TOKEN_AUTH

pytestmark = pytest.mark.integration

POLICY_FILE = Path(__file__).resolve().parents[2] / "deploy" / "vault" / "rotator-policy.hcl"
MOUNT = "secret"      # the dev server's KV v2 mount, as the policy expects


APPROLE_AUTH = ('method = "approle"\nrole_id = "{role_id}"\n'
                'secret_id_env = "IT_VAULT_SECRET_ID"\nmount = "{mount}"')


@dataclass
class Target:
    """One target at ``secret/rotator/it-<hex>/app`` with its account in the emulator."""

    emulator: Emulator
    vault_url: str
    root: hvac.Client
    path: str
    admin: SeededAccount
    account: SeededAccount
    tmp: Path
    db_url: str

    def current(self) -> tuple[int, dict[str, str], dict[str, str]]:
        """Version, data and custom metadata of the secret, read with the root token."""
        got = self.root.secrets.kv.v2.read_secret_version(
            path=self.path, mount_point=MOUNT, raise_on_deleted_version=True)
        meta = got["data"]["metadata"]
        return meta["version"], got["data"]["data"], meta.get("custom_metadata") or {}

    def whoami(self, secret: str) -> httpx.Response:
        return httpx.get(f"{self.emulator.url}/v1/whoami",
                         headers={"Authorization": f"Bearer {secret}"}, timeout=5)

    def rotate(self, auth: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        """``rotator rotate app --grace 0s`` in a subprocess, with only ``env``'s credentials."""
        config = self.tmp / "rotator.toml"
        target = TARGET.format(name="app", provider="count", sa=self.account.account_id,
                               mount=MOUNT,
                               path=self.path)
        config.write_text(CONFIG.format(
            db_url=self.db_url, vault_url=self.vault_url, auth=auth, count_url=self.emulator.url,
            auth_mode="admin", management=ADMIN_MANAGEMENT, grace="0s", probe_timeout="5s",
            targets=target, provider="count", provider_type="count", shape=""))
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        return subprocess.run(
            [sys.executable, "-m", "rotator", "--config", str(config), "--log-format", "json",
             "--log-level", "debug", "rotate", "app", "--grace", "0s"],
            env={**clean, "IT_COUNT_ADMIN_KEY": self.admin.secret, **env},
            capture_output=True, text=True, timeout=60, check=False)


MakePolicy = Callable[..., str]


def _hex() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
def make_policy(openbao_root_client: hvac.Client) -> Iterator[MakePolicy]:
    """``make_policy(text=None)``: write the policy (the shipped file by default); its name."""
    written: list[str] = []

    def make(text: str | None = None) -> str:
        name = f"rotator-it-{_hex()}"
        openbao_root_client.sys.create_or_update_policy(
            name=name, policy=POLICY_FILE.read_text() if text is None else text)
        written.append(name)
        return name

    try:
        yield make
    finally:
        for name in written:
            openbao_root_client.sys.delete_policy(name=name)  # type: ignore[no-untyped-call]


def _policy_token(root: hvac.Client, policy: str) -> str:
    """A renewable 1h token with ``policy`` only: not even Vault's default policy."""
    created = root.auth.token.create(policies=[policy], no_default_policy=True, ttl="1h",
                                     renewable=True)
    assert created["auth"]["policies"] == [policy]
    token: str = created["auth"]["client_token"]
    return token


def _seed(emulator: Emulator, openbao: OpenBao, root: hvac.Client, tmp: Path,
          db_url: str) -> Iterator[Target]:
    path = f"rotator/it-{_hex()}/app"
    admin = emulator.seed_account("admin", role="admin")
    account = emulator.seed_account("app")
    root.secrets.kv.v2.create_or_update_secret(
        path=path, secret={"api_key": account.secret, "note": "keep me"}, mount_point=MOUNT)
    try:
        yield Target(emulator, openbao.url, root, path, admin, account, tmp, db_url)
    finally:
        root.secrets.kv.v2.delete_metadata_and_all_versions(path=path, mount_point=MOUNT)


@pytest.fixture
def target(emulator: Emulator, openbao: OpenBao, openbao_root_client: hvac.Client,
           migrated_url: str, tmp_path: Path) -> Iterator[Target]:
    """A target on each database backend."""
    yield from _seed(emulator, openbao, openbao_root_client, tmp_path, migrated_url)


@pytest.fixture
def sqlite_target(emulator: Emulator, openbao: OpenBao, openbao_root_client: hvac.Client,
                  tmp_path: Path) -> Iterator[Target]:
    """A target on SQLite only: for tests about Vault alone."""
    db_url = f"sqlite:///{tmp_path / 'rotator.db'}"
    upgrade(db_url)
    yield from _seed(emulator, openbao, openbao_root_client, tmp_path, db_url)


def _assert_rotated(t: Target, result: subprocess.CompletedProcess[str]) -> None:
    """The rotation completed: a new version holding a new, working key; the old key is dead."""
    assert result.returncode == 0, result.stderr
    assert "completed" in result.stdout
    version, data, meta = t.current()
    assert version == 2, "the rotation did not write a new version"
    assert data["api_key"] != t.account.secret and data["note"] == "keep me"
    who = t.whoami(data["api_key"])
    assert who.status_code == 200, who.text
    assert meta["rotator_key_id"] == who.json()["result"]["key_id"], "custom metadata not set"
    assert meta["rotator_rotation_id"].startswith("rot_")
    assert t.whoami(t.account.secret).status_code == 401, "the old key was not revoked"


# --- enough ---------------------------------------------------------------------------------

def test_rotation_with_a_token_holding_only_the_policy(
        target: Target, make_policy: MakePolicy, openbao_root_client: hvac.Client) -> None:
    # As deploy/vault/README.md recommends: Vault refuses writes without check-and-set.
    openbao_root_client.secrets.kv.v2.update_metadata(path=target.path, cas_required=True,
                                                      mount_point=MOUNT)
    token = _policy_token(openbao_root_client, make_policy())
    result = target.rotate(TOKEN_AUTH, {"IT_VAULT_TOKEN": token})
    _assert_rotated(target, result)
    meta = openbao_root_client.secrets.kv.v2.read_secret_metadata(path=target.path,
                                                                  mount_point=MOUNT)
    assert meta["data"]["cas_required"] is True, "the metadata write reset cas_required"


def test_rotation_with_an_approle_bound_to_the_policy(
        target: Target, make_policy: MakePolicy, openbao_root_client: hvac.Client) -> None:
    policy = make_policy()
    mount = f"approle-{_hex()}"
    root = openbao_root_client
    root.sys.enable_auth_method("approle", path=mount)
    try:
        # Bound to the policy only, with short-lived tokens, as deploy/vault/README.md does.
        root.auth.approle.create_or_update_approle(
            "rotator", token_policies=[policy], token_ttl="10m", token_max_ttl="1h",
            mount_point=mount)
        role_id = root.auth.approle.read_role_id("rotator", mount_point=mount)["data"]["role_id"]
        secret_id = root.auth.approle.generate_secret_id(
            "rotator", mount_point=mount)["data"]["secret_id"]
        result = target.rotate(APPROLE_AUTH.format(role_id=role_id, mount=mount),
                               {"IT_VAULT_SECRET_ID": secret_id})
    finally:
        root.sys.disable_auth_method(path=mount)  # type: ignore[no-untyped-call]
    _assert_rotated(target, result)


def test_token_upkeep_needs_nothing_but_the_policy(
        openbao: OpenBao, make_policy: MakePolicy, openbao_root_client: hvac.Client) -> None:
    """Readiness (lookup-self) and renewal (renew-self) work without the default policy."""
    token = _policy_token(openbao_root_client, make_policy())
    with VaultStore(openbao.url, TokenAuth(Secret(token))) as store:
        assert store.is_ready()
        store.login()  # lookup-self, raising if denied
        # A 1h token is below a 2h threshold: rotator renews it.
        assert store.renew_if_needed(min_ttl_seconds=7200) == "renewed"


# --- no more --------------------------------------------------------------------------------

def _denied(action: Callable[[], object]) -> None:
    with pytest.raises(hvac_errors.Forbidden):
        action()


def test_the_policy_grants_nothing_else(sqlite_target: Target, make_policy: MakePolicy,
                                        openbao: OpenBao,
                                        openbao_root_client: hvac.Client) -> None:
    t, root = sqlite_target, openbao_root_client
    # A second version under rotator/, so that version operations have something to hit.
    root.secrets.kv.v2.create_or_update_secret(
        path=t.path, secret={"api_key": t.account.secret, "note": "v2"}, mount_point=MOUNT)
    outside = [f"other-{_hex()}/app", f"rotatorx-{_hex()}/app"]   # rotatorx: not rotator/
    for path in outside:
        root.secrets.kv.v2.create_or_update_secret(path=path, secret={"api_key": "outside"},
                                                   mount_point=MOUNT)
    client = hvac.Client(url=openbao.url, token=_policy_token(root, make_policy()), timeout=5)
    kv = client.secrets.kv.v2
    try:
        # What rotator does is allowed: read (also an older version), cas write, metadata.
        assert kv.read_secret_version(path=t.path, mount_point=MOUNT,
                                      raise_on_deleted_version=True)["data"]["data"]["note"] == "v2"
        assert kv.read_secret_version(path=t.path, version=1, mount_point=MOUNT,
                                      raise_on_deleted_version=True)["data"]["data"]["note"] == (
                                          "keep me")
        kv.create_or_update_secret(path=t.path, secret={"api_key": t.account.secret}, cas=2,
                                   mount_point=MOUNT)
        client.adapter.post(f"/v1/{MOUNT}/metadata/{t.path}",
                            json={"custom_metadata": {"rotator_key_id": "k"}})

        # Outside rotator/: no read, no write, no metadata.
        for path in outside:
            _denied(partial(kv.read_secret_version, path=path, mount_point=MOUNT,
                            raise_on_deleted_version=True))
            _denied(partial(kv.create_or_update_secret, path=path, secret={"api_key": "x"},
                            cas=1, mount_point=MOUNT))
            _denied(partial(kv.read_secret_metadata, path=path, mount_point=MOUNT))
        _denied(lambda: kv.create_or_update_secret(path="rotator", secret={"api_key": "x"},
                                                   mount_point=MOUNT))
        # Under rotator/: no new secrets, no listing, no metadata reads.
        _denied(lambda: kv.create_or_update_secret(
            path=f"rotator/new-{_hex()}", secret={"api_key": "x"}, cas=0, mount_point=MOUNT))
        _denied(lambda: kv.list_secrets(path="rotator/", mount_point=MOUNT))
        _denied(lambda: kv.read_secret_metadata(path=t.path, mount_point=MOUNT))
        # ... and never a deletion of any kind.
        _denied(lambda: kv.delete_latest_version_of_secret(path=t.path, mount_point=MOUNT))
        _denied(lambda: kv.delete_secret_versions(path=t.path, versions=[1], mount_point=MOUNT))
        _denied(lambda: kv.undelete_secret_versions(path=t.path, versions=[1],
                                                    mount_point=MOUNT))
        _denied(lambda: kv.destroy_secret_versions(path=t.path, versions=[1], mount_point=MOUNT))
        _denied(lambda: kv.delete_metadata_and_all_versions(path=t.path, mount_point=MOUNT))
        # Nothing outside KV either: no tokens, policies or mounts.
        _denied(lambda: client.auth.token.create(policies=["default"], ttl="1m"))
        _denied(client.sys.list_acl_policies)
        _denied(client.sys.list_mounted_secrets_engines)
    finally:
        client.adapter.close()
        for path in outside:
            root.secrets.kv.v2.delete_metadata_and_all_versions(path=path, mount_point=MOUNT)

    # Every version is still there, undeleted and undestroyed.
    versions = root.secrets.kv.v2.read_secret_metadata(path=t.path, mount_point=MOUNT)
    states = versions["data"]["versions"]
    assert sorted(states) == ["1", "2", "3"]
    assert not any(v["destroyed"] or v["deletion_time"] for v in states.values())


# --- each grant is needed -------------------------------------------------------------------

def _without(pattern: str, replacement: str | Callable[[re.Match[str]], str]) -> str:
    """The shipped policy with one grant taken away (the edit must apply exactly once)."""
    changed, count = re.subn(pattern, replacement, POLICY_FILE.read_text(), flags=re.DOTALL)
    assert count == 1, f"the policy no longer has the shape this test edits: {pattern}"
    return changed


_DATA = r'(path "secret/data/rotator/\*" \{\s*capabilities = \[)([^\]]*)(\])'
_META = r'(path "secret/metadata/rotator/\*" \{\s*capabilities = \[)([^\]]*)(\])'


@pytest.mark.parametrize(("pattern", "drop", "why"), [
    pytest.param(_DATA, "read", "cannot read Vault", id="data-read"),
    pytest.param(_DATA, "update", "permission denied", id="data-update"),
    pytest.param(_META, "update", "permission denied", id="metadata-update"),
])
def test_each_kv_grant_is_needed(sqlite_target: Target, make_policy: MakePolicy,
                                 openbao_root_client: hvac.Client, pattern: str, drop: str,
                                 why: str) -> None:
    def strip(match: re.Match[str]) -> str:
        caps = [c.strip() for c in match.group(2).split(",")]
        assert f'"{drop}"' in caps, f"the shipped policy does not grant {drop}"
        return match.group(1) + ", ".join(c for c in caps if c != f'"{drop}"') + match.group(3)

    token = _policy_token(openbao_root_client, make_policy(_without(pattern, strip)))
    result = sqlite_target.rotate(TOKEN_AUTH, {"IT_VAULT_TOKEN": token})
    assert result.returncode == 1, result.stderr
    assert why in result.stdout + result.stderr
    # Refused or rolled back: the key Vault serves is the old one, and it still works.
    _, data, _ = sqlite_target.current()
    assert data["api_key"] == sqlite_target.account.secret
    assert sqlite_target.whoami(data["api_key"]).status_code == 200


@pytest.mark.parametrize("path", ["auth/token/lookup-self", "auth/token/renew-self"])
def test_each_token_grant_is_needed(openbao: OpenBao, make_policy: MakePolicy,
                                    openbao_root_client: hvac.Client, path: str) -> None:
    stanza = r'path "' + re.escape(path) + r'" \{[^}]*\}\n'
    token = _policy_token(openbao_root_client, make_policy(_without(stanza, "")))
    with VaultStore(openbao.url, TokenAuth(Secret(token))) as store:
        if path.endswith("lookup-self"):
            assert not store.is_ready()
        else:
            assert store.is_ready()
            with pytest.raises(VaultError, match="permission denied"):
                store.renew_if_needed(min_ttl_seconds=7200)
