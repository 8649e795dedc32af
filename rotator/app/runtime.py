"""From a validated ``Config`` to live adapters: the one place that builds them.

Secrets named in the config are resolved here (environment or file) and registered
with the log redactor before anything can log them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from sqlalchemy.engine import Engine

from rotator.adapters.clock import SystemClock
from rotator.adapters.count.client import CountProvider
from rotator.adapters.http_provider import HttpProvider
from rotator.adapters.keyapi.session import CallRecord
from rotator.adapters.sql.repository import SqlRepository
from rotator.adapters.sql.schema import check_schema
from rotator.adapters.vault.auth import AppRoleAuth, KubernetesAuth, TokenAuth, VaultAuth
from rotator.adapters.vault.store import VaultStore
from rotator.app.database import chain_key, database_engine
from rotator.config.model import (
    Config,
    CountProviderConfig,
    ProviderConfig,
    VaultAppRoleAuth,
    VaultTokenAuth,
)
from rotator.config.retry import RetryPolicy
from rotator.config.secret_sources import resolve_secret
from rotator.core.grace import GracePolicy
from rotator.core.model import Rotation
from rotator.core.ports import Clock, SecretRef
from rotator.core.secret import Secret
from rotator.core.target import TargetSpec
from rotator.engine import crashpoints
from rotator.redaction import remember_secret

__all__ = ["Provider", "Runtime", "build_provider", "build_runtime", "build_store",
           "orphan_spec", "target_spec", "vault_auth"]

Provider = CountProvider | HttpProvider


def vault_auth(config: Config) -> VaultAuth:
    auth = config.vault.auth
    if isinstance(auth, VaultTokenAuth):
        token = resolve_secret("vault.auth.token", auth.token_env, auth.token_file)
        remember_secret(token, pinned=True)
        return TokenAuth(token)
    if isinstance(auth, VaultAppRoleAuth):
        secret_id = resolve_secret("vault.auth.secret_id", auth.secret_id_env,
                                   auth.secret_id_file)
        remember_secret(secret_id, pinned=True)
        return AppRoleAuth(role_id=auth.role_id, secret_id=secret_id, mount=auth.mount)
    return KubernetesAuth(role=auth.role, jwt_path=str(auth.jwt_path), mount=auth.mount)


def management_keys(config: Config) -> dict[str, Secret | None]:
    keys: dict[str, Secret | None] = {}
    for name, provider in config.providers.items():
        if provider.auth_mode == "self" or provider.management_key_target is not None:
            keys[name] = None   # read from Vault when needed (engine.management)
            continue
        key = resolve_secret(f"providers.{name}.management_key", provider.management_key_env,
                             provider.management_key_file)
        remember_secret(key, pinned=True)
        keys[name] = key
    return keys


def _ref(config: Config, name: str) -> SecretRef:
    target = config.target(name)
    return SecretRef(target.vault_mount, target.vault_path, target.vault_field)


def target_spec(config: Config, name: str, keys: dict[str, Secret | None]) -> TargetSpec:
    target = config.target(name)
    probe = config.probe_for(name)
    own = config.providers[target.provider].management_key_target
    usage = config.usage_grace_for(name)
    return TargetSpec(
        name=name, provider=target.provider, service_account=target.service_account,
        ref=_ref(config, name), grace_seconds=config.grace_for(name),
        probe_timeout=probe.timeout, probe_interval=probe.interval,
        management_key=keys[target.provider],
        management_key_ref=None if own is None else _ref(config, own),
        usage_grace=None if usage is None else GracePolicy(*usage))


def orphan_spec(config: Config, source: Rotation, keys: dict[str, Secret | None]) -> TargetSpec:
    """The spec a target no longer in the config is finished with (``app.orphans``): all
    the row recorded (name, provider, service account, Vault ref, grace, usage grace),
    the probe of ``[defaults]`` and the management key of the row's provider, which must
    still be configured (``Configured`` checked it)."""
    if source.provider is None or source.vault_ref is None:
        raise ValueError(f"rotation {source.rotation_id} recorded no provider or Vault ref")
    own = config.providers[source.provider].management_key_target
    probe = config.defaults.probe
    return TargetSpec(
        name=source.target, provider=source.provider, service_account=source.service_account,
        ref=source.vault_ref, grace_seconds=source.grace_seconds,
        probe_timeout=probe.timeout, probe_interval=probe.interval,
        management_key=keys[source.provider],
        management_key_ref=None if own is None else _ref(config, own),
        usage_grace=source.usage_grace)


@dataclass
class Runtime:
    config: Config
    engine: Engine
    repo: SqlRepository
    store: VaultStore
    providers: dict[str, Provider]
    keys: dict[str, Secret | None]
    clock: Clock = field(default_factory=SystemClock)

    def spec(self, name: str) -> TargetSpec:
        return target_spec(self.config, name, self.keys)

    def orphan_spec(self, source: Rotation) -> TargetSpec:
        return orphan_spec(self.config, source, self.keys)

    def close(self) -> None:
        for provider in self.providers.values():
            provider.close()
        self.store.close()
        self.engine.dispose()


def build_store(config: Config, retry: RetryPolicy | None = None) -> VaultStore:
    """Vault's adapter, logged in on first use; ``retry`` replaces the config's policy."""
    return VaultStore(
        config.vault.url, vault_auth(config), namespace=config.vault.namespace,
        timeout=config.vault.timeout, retry=retry or config.vault.retry,
        verify=str(config.vault.ca_bundle) if config.vault.ca_bundle else True,
        proxy=config.vault.proxy)


def build_provider(name: str, p: ProviderConfig, clock: Clock, *,
                   on_call: Callable[[CallRecord], None] | None = None) -> Provider:
    """The adapter of the provider ``name``: Count's, or the generic one for ``http``."""
    if isinstance(p, CountProviderConfig):
        return CountProvider(
            p.base_url, paths=p.paths, timeout=p.timeout,
            retry=p.retry, verify=str(p.ca_bundle) if p.ca_bundle else True, proxy=p.proxy,
            now=clock.now, on_call=on_call)
    return HttpProvider(name, p, now=clock.now, on_call=on_call)


def build_runtime(config: Config, *, require_schema: bool = True,
                  on_call: Callable[[str, CallRecord], None] | None = None,
                  clock: Clock | None = None) -> Runtime:
    """Live adapters for ``config``; ``on_call(provider, record)`` hears every provider call.

    Every adapter that reads the time reads ``clock`` (default: the system's).
    """
    clock = clock or SystemClock()
    keys = management_keys(config)
    audit_key = chain_key(config)
    store = build_store(config)
    providers = {
        name: build_provider(name, p, clock,
                             on_call=None if on_call is None else partial(on_call, name))
        for name, p in config.providers.items()
    }
    engine = database_engine(config)
    try:
        if require_schema:
            check_schema(engine)
    except BaseException:
        engine.dispose()
        store.close()
        for provider in providers.values():
            provider.close()
        raise
    repo = SqlRepository(engine, clock=clock.now, chain_key=audit_key,
                         routes=config.notifications.routes())
    crashpoints.guard_pauses(repo.writes_held())
    return Runtime(config=config, engine=engine, repo=repo, store=store, providers=providers,
                   keys=keys, clock=clock)
