"""Seed the LOCAL compose stack (deploy/compose.yaml). Never point this at a real Vault.

Runs once, in the rotator image (it has httpx and hvac), before `migrate` and `rotator`:

1. Count emulator: one admin service account (its key is rotator's management key) and
   one service account per target of the config template, through the emulator's
   control endpoint (POST /_emulator/accounts, with the emulator's control token from
   $SEED_EMULATOR_TOKEN, answers with the account's first key).
2. OpenBao dev server, with the dev root token:
   - each target's current key at its vault_mount/vault_path (field vault_field), which is
     what consumers read and what rotator rotates;
   - the policy deploy/vault/rotator-policy.hcl as "rotator", the AppRole auth method at
     "approle", a role "rotator" bound to that policy only, with the fixed role_id
     "rotator-compose", and a fresh secret_id.
3. Files: the management key and the secret_id in $SEED_SECRETS_DIR (/run/rotator), the
   config with each "@<target>@" replaced by that target's account id at $SEED_CONFIG_OUT
   (/etc/rotator/config.toml). Owned by uid 10001 (the image's user), mode 0400 / 0444,
   each created 0600 (never readable by others while it is being written).

Idempotent: when the written config's targets still hold keys in Vault that authenticate
at the emulator, and the secret files exist, it does nothing. After the emulator or
OpenBao restarted (both keep everything in memory), it seeds anew.
"""

from __future__ import annotations

import os
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx
import hvac
from hvac import exceptions as hvac_errors

EMULATOR = os.environ.get("SEED_EMULATOR_URL", "http://emulator:8099")
# The emulator's control token (its ROTATOR_EMULATOR_TOKEN), for POST /_emulator/accounts.
EMULATOR_CONTROL = {"X-Emulator-Token": os.environ.get("SEED_EMULATOR_TOKEN", "")}
VAULT = os.environ.get("SEED_VAULT_URL", "http://openbao:8200")
ROOT_TOKEN = os.environ.get("SEED_VAULT_ROOT_TOKEN", "")
TEMPLATE = Path(os.environ.get("SEED_TEMPLATE", "/seed/config.toml"))
POLICY = Path(os.environ.get("SEED_POLICY", "/seed/rotator-policy.hcl"))
CONFIG_OUT = Path(os.environ.get("SEED_CONFIG_OUT", "/etc/rotator/config.toml"))
SECRETS = Path(os.environ.get("SEED_SECRETS_DIR", "/run/rotator"))
OWNER = 10001  # the image's user

ROLE = "rotator"
ROLE_ID = "rotator-compose"  # [vault.auth] role_id in deploy/compose/config.toml
POLICY_NAME = "rotator"


def log(message: str) -> None:
    print(f"seed: {message}", flush=True)


def wait_for(url: str, what: str, timeout: float = 60,
             headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2, headers=headers).status_code < 500:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"seed: {what} did not answer at {url} within {timeout:g}s")
        time.sleep(0.5)


def write_file(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)  # a crashed run's leftover: never reuse its mode
    # A new file, 0600 from the start whatever the umask: the secret inside is never
    # readable by anyone else, not even before the chmod to its final mode below.
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(text)
    if os.geteuid() == 0:
        os.chown(tmp, OWNER, OWNER)
    tmp.chmod(mode)
    tmp.replace(path)


def authenticates(key: str) -> bool:
    reply = httpx.get(f"{EMULATOR}/v1/whoami", headers={"Authorization": f"Bearer {key}"},
                      timeout=5)
    return reply.status_code == 200


def already_seeded(vault: hvac.Client) -> bool:
    files = [CONFIG_OUT, SECRETS / "count-management-key", SECRETS / "vault-secret-id"]
    if not all(f.is_file() for f in files):
        return False
    if not authenticates((SECRETS / "count-management-key").read_text().strip()):
        return False
    config = tomllib.loads(CONFIG_OUT.read_text())
    for target in config["targets"].values():
        try:
            got = vault.secrets.kv.v2.read_secret_version(
                path=target["vault_path"], mount_point=target.get("vault_mount", "secret"),
                raise_on_deleted_version=True)
        except hvac_errors.InvalidPath:
            return False
        key = got["data"]["data"].get(target.get("vault_field", "api_key"))
        if not key or not authenticates(key):
            return False
    try:
        vault.auth.approle.read_role_id(ROLE)
    except hvac_errors.VaultError:
        return False
    return True


def new_account(name: str, role: str) -> dict[str, Any]:
    reply = httpx.post(f"{EMULATOR}/_emulator/accounts", json={"name": name, "role": role},
                       headers=EMULATOR_CONTROL, timeout=10)
    reply.raise_for_status()
    result: dict[str, Any] = reply.json()["result"]
    return result


def setup_approle(vault: hvac.Client) -> str:
    """The policy, AppRole auth, the role bound to the policy; returns a new secret_id."""
    vault.sys.create_or_update_policy(name=POLICY_NAME, policy=POLICY.read_text())
    if "approle/" not in vault.sys.list_auth_methods()["data"]:  # type: ignore[no-untyped-call]
        vault.sys.enable_auth_method("approle", path="approle")
    # Tokens live 1h (rotator renews them, then logs in again); the secret_id never expires:
    # LOCAL ONLY, see deploy/vault/README.md for real values.
    lifetimes = {"token_ttl": "1h", "token_max_ttl": "24h", "secret_id_ttl": "0"}
    vault.auth.approle.create_or_update_approle(
        ROLE, token_policies=[POLICY_NAME], mount_point="approle", **lifetimes)
    # A fixed role_id, so the config can name it (a role_id is not a secret).
    vault.adapter.post(f"/v1/auth/approle/role/{ROLE}/role-id", json={"role_id": ROLE_ID})
    secret_id: str = vault.auth.approle.generate_secret_id(ROLE)["data"]["secret_id"]
    return secret_id


def main() -> int:
    if not ROOT_TOKEN:
        sys.exit("seed: SEED_VAULT_ROOT_TOKEN is not set")
    if not EMULATOR_CONTROL["X-Emulator-Token"]:
        sys.exit("seed: SEED_EMULATOR_TOKEN is not set")
    os.umask(0o077)  # nothing this writes is for other users (write_file sets final modes)
    wait_for(f"{EMULATOR}/_emulator/state", "the Count emulator", headers=EMULATOR_CONTROL)
    wait_for(f"{VAULT}/v1/sys/health", "OpenBao")
    vault = hvac.Client(url=VAULT, token=ROOT_TOKEN, timeout=10)
    if already_seeded(vault):
        log(f"already seeded; {CONFIG_OUT} and the keys in Vault are current")
        return 0

    template = TEMPLATE.read_text()
    targets = tomllib.loads(template)["targets"]
    admin = new_account("rotator-admin", "admin")
    log(f"emulator: admin service account {admin['account_id']} (management key)")
    rendered = template
    for name, target in targets.items():
        account = new_account(name, "member")
        placeholder = f'"@{name}@"'
        if placeholder not in rendered:
            sys.exit(f"seed: {TEMPLATE}: targets.{name}.service_account is not {placeholder}")
        rendered = rendered.replace(placeholder, f'"{account["account_id"]}"')
        mount = target.get("vault_mount", "secret")
        vault.secrets.kv.v2.create_or_update_secret(
            path=target["vault_path"], mount_point=mount,
            secret={target.get("vault_field", "api_key"): account["api_key"]})
        log(f"target {name}: account {account['account_id']}, key {account['key_id']} "
            f"stored at {mount}/{target['vault_path']}")

    secret_id = setup_approle(vault)
    log(f"vault: policy {POLICY_NAME!r}, AppRole role {ROLE!r} (role_id {ROLE_ID})")
    write_file(SECRETS / "count-management-key", admin["api_key"] + "\n", 0o400)
    write_file(SECRETS / "vault-secret-id", secret_id + "\n", 0o400)
    write_file(CONFIG_OUT, rendered, 0o444)
    log(f"wrote {CONFIG_OUT} and the secrets in {SECRETS}")
    vault.adapter.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
