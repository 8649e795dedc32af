"""``rotator check-config --connect``: the config against the real Vault and providers.

Logs in to Vault, reads each target's path (the secret is never shown: only its version
and that the field is there), and probes each provider with its management key (admin
mode) or each target's key from Vault (self mode). Each check names what failed: the
target or provider, the config key to look at, and the URL tried. One attempt per call,
no retries: a check answers within the configured timeouts, whatever the retry policy.
"""

from __future__ import annotations

from dataclasses import dataclass

from rotator.adapters.clock import SystemClock
from rotator.adapters.vault.store import VaultStore
from rotator.app.next_step import seed_command, vault_credentials
from rotator.app.runtime import Provider, build_provider, build_store, management_keys
from rotator.config.model import Config
from rotator.config.retry import RetryPolicy
from rotator.core.errors import (
    ProviderUnavailable,
    RotatorError,
    SecretNotFound,
    Unauthorized,
    VaultError,
)
from rotator.core.ports import SecretRef, VaultSecret
from rotator.core.secret import Secret

__all__ = ["Check", "check_connections"]

_ONCE = RetryPolicy(max_attempts=1)


@dataclass(frozen=True, slots=True)
class Check:
    subject: str     # "vault", "targets.NAME", "providers.NAME"
    ok: bool
    detail: str


def check_connections(config: Config) -> list[Check]:
    """Every check, in order: Vault's login, each target's path, each provider's key."""
    keys = management_keys(config)
    store = build_store(config, retry=_ONCE)
    providers = {name: build_provider(name, p.model_copy(update={"retry": _ONCE}),
                                      SystemClock())
                 for name, p in config.providers.items()}
    try:
        checks = [_login(config, store)]
        read: dict[str, VaultSecret] = {}
        for name in sorted(config.targets) if checks[0].ok else ():
            check, secret = _read(config, store, name)
            checks.append(check)
            if secret is not None:
                read[name] = secret
        for name in sorted(config.providers):
            checks += _probe(config, name, providers[name], keys[name], read)
    finally:
        store.close()
        for provider in providers.values():
            provider.close()
    return checks


def _login(config: Config, store: VaultStore) -> Check:
    try:
        store.login()
    except RotatorError as exc:
        return Check("vault", False, f"cannot log in to Vault at {config.vault.url} "
                     f"([vault] url): {exc}; check {vault_credentials(config)}")
    return Check("vault", True, f"logged in to Vault at {config.vault.url}")


def _read(config: Config, store: VaultStore,
          name: str) -> tuple[Check, VaultSecret | None]:
    target = config.targets[name]
    where = f"{target.vault_mount}/{target.vault_path} field {target.vault_field!r}"
    subject = f"targets.{name}"
    try:
        secret = store.read_current(SecretRef(target.vault_mount, target.vault_path,
                                              target.vault_field))
    except SecretNotFound:
        return Check(subject, False, f"no key at {where} (vault_mount, vault_path, "
                     f"vault_field): seed it with {seed_command(target)}"), None
    except VaultError as exc:
        return Check(subject, False, f"cannot read {where}: {exc}; check that the policy "
                     f"of {vault_credentials(config)} reads it"), None
    except RotatorError as exc:
        return Check(subject, False, f"cannot read {where}: {exc}"), None
    return Check(subject, True, f"reads {where} (version {secret.version})"), secret


def _probe(config: Config, name: str, provider: Provider, key: Secret | None,
           read: dict[str, VaultSecret]) -> list[Check]:
    """Admin mode: the management key; self mode: each target's key read from Vault."""
    base_url = config.providers[name].base_url
    if key is not None:
        return [_whoami(f"providers.{name}", name, provider, key, base_url,
                        f"the management key ([providers.{name}] management_key_env or "
                        "management_key_file)", None)]
    return [_whoami(f"targets.{target}", name, provider, read[target].secret, base_url,
                    f"the key in Vault of target {target}",
                    config.targets[target].service_account)
            for target in sorted(read) if config.targets[target].provider == name]


def _whoami(subject: str, name: str, provider: Provider, key: Secret, base_url: str,
            what: str, account: str | None) -> Check:
    try:
        who = provider.whoami(key)
    except Unauthorized as exc:
        return Check(subject, False, f"{what} was refused at {base_url}: {exc}")
    except ProviderUnavailable as exc:
        return Check(subject, False, f"no answer from {base_url} ([providers.{name}] "
                     f"base_url): {exc}")
    except RotatorError as exc:
        return Check(subject, False, f"probing {what} at {base_url} failed: {exc}")
    if account is not None and who.service_account_id != account:
        return Check(subject, False, f"{what} belongs to service account "
                     f"{who.service_account_id}, not {account} (service_account)")
    return Check(subject, True, f"{what} authenticates at {base_url} as "
                 f"{who.service_account_id} (key {who.key_id})")
