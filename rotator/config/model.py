"""The config file: TOML parsed once into frozen, validated objects.

Every problem is reported at once, each naming its dotted key, the file and (where the
key is written in it) the line. Secrets never live in the TOML: a key holding one names
an environment variable (``*_env``) or a file (``*_file``) instead; see ``secret_sources.py``.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import (
    AfterValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rotator.config.base import (
    Duration,
    Frozen,
    check_proxy_url,
    check_url,
    check_vault_path,
    refuse_plain_http,
)
from rotator.config.daemon import DaemonConfig, LoggingConfig, ScheduleConfig, resolve_schedule
from rotator.config.http_provider import HttpProviderConfig
from rotator.config.locate import KeyedProblem, problems_by_key
from rotator.config.notifications import NotificationsConfig
from rotator.config.provider import CountPaths, ProviderConnection
from rotator.config.retry import RetryPolicy
from rotator.config.vault_addr import explain_vault_url, with_vault_addr
from rotator.core.errors import ConfigError, UsageError
from rotator.scheduling.schedule import Schedule

__all__ = [
    "AuditConfig",
    "Config",
    "CountProviderConfig",
    "DaemonConfig",
    "DatabaseConfig",
    "HttpProviderConfig",
    "LoggingConfig",
    "NotificationsConfig",
    "ProbeConfig",
    "ProviderConfig",
    "ScheduleConfig",
    "TargetConfig",
    "VaultAppRoleAuth",
    "VaultConfig",
    "VaultKubernetesAuth",
    "VaultTokenAuth",
    "load_config",
]


class CountProviderConfig(ProviderConnection):
    type: Literal["count"]
    paths: CountPaths = CountPaths()


ProviderConfig = Annotated[CountProviderConfig | HttpProviderConfig,
                           Field(discriminator="type")]


class VaultTokenAuth(Frozen):
    method: Literal["token"] = "token"
    # No default variable: an operator's own VAULT_TOKEN must never stand in for the token
    # the config names (secret_sources demands exactly one of these two).
    token_env: str | None = None
    token_file: Path | None = None


class VaultAppRoleAuth(Frozen):
    method: Literal["approle"]
    role_id: str = Field(min_length=1)
    secret_id_env: str | None = None
    secret_id_file: Path | None = None
    mount: Annotated[str, AfterValidator(check_vault_path)] = "approle"


class VaultKubernetesAuth(Frozen):
    method: Literal["kubernetes"]
    role: str = Field(min_length=1)
    jwt_path: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    mount: Annotated[str, AfterValidator(check_vault_path)] = "kubernetes"


VaultAuthConfig = Annotated[
    VaultTokenAuth | VaultAppRoleAuth | VaultKubernetesAuth, Field(discriminator="method")
]


class VaultConfig(Frozen):
    url: str
    namespace: str | None = None
    ca_bundle: Path | None = None
    allow_insecure_http: bool = False
    timeout: Duration = 10.0
    proxy: str | None = None   # the environment's proxy variables are never read
    auth: VaultAuthConfig   # required: no implicit token source
    retry: RetryPolicy = RetryPolicy()

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value, schemes=("https", "http"))

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, value: str | None) -> str | None:
        return None if value is None else check_proxy_url(value)

    @model_validator(mode="after")
    def _secure(self) -> VaultConfig:
        refuse_plain_http(self.url, self.allow_insecure_http)
        return self


class DatabaseConfig(Frozen):
    url: str = "sqlite:///rotator.db"
    # PostgreSQL's password, read by rotator (libpq refuses a PGPASSFILE that a Kubernetes
    # Secret mounts: the files are group-readable).
    password_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _supported(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgresql+psycopg://")):
            raise ValueError("expected sqlite:///PATH or postgresql+psycopg://user@host/db")
        if value.startswith("postgresql") and _carries_password(value):
            # The config file is read by many (check-config, reviews, git): the password
            # belongs in a file only rotator reads. Never quote the URL: it holds it.
            raise ValueError("must not carry a password (user:password@ or ?password=); "
                             "put it in a file and name that file in [database] password_file")
        return value

    @field_validator("password_file")
    @classmethod
    def _for_postgresql(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and str(info.data.get("url", "")).startswith("sqlite:"):
            raise ValueError("is for PostgreSQL; SQLite has no password")
        return value


def _carries_password(url: str) -> bool:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    query = parse_qsl(parts.query, keep_blank_values=True)
    in_query = any(name.lower() == "password" for name, _ in query)
    return ":" in userinfo or in_query


class AuditConfig(Frozen):
    """``[audit]``: the key of the audit chain's HMAC (``docs/audit-chain.md``)."""

    # Exactly one of the two: the rule every secret's pair follows (config/base.py).
    chain_key_env: str | None = None
    chain_key_file: Path | None = None


class ProbeConfig(Frozen):
    timeout: Duration = 60.0      # how long a new key may take to propagate
    interval: Duration = 1.0      # first wait between probes (doubles, capped at 10 s)


class DefaultsConfig(Frozen):
    grace: Duration = 3600.0
    # Usage-aware grace (both or neither): see TargetConfig.
    quiet_period: Duration | None = None
    max_grace: Duration | None = None
    lease_ttl: Duration = 300.0
    probe: ProbeConfig = ProbeConfig()
    schedule: ScheduleConfig = ScheduleConfig()


# What SQL keeps of a name or an id (``adapters/sql/tables.py``): a longer one would fail
# every write of its rotation on PostgreSQL, and be kept whole by SQLite.
NAME_MAX = 200


class TargetConfig(Frozen):
    provider: str
    service_account: str = Field(min_length=1, max_length=NAME_MAX)
    vault_mount: Annotated[str, Field(max_length=NAME_MAX),
                           AfterValidator(check_vault_path)] = "secret"
    vault_path: Annotated[str, AfterValidator(check_vault_path)]
    vault_field: str = Field(default="api_key", min_length=1, max_length=NAME_MAX)
    grace: Duration | None = None
    # Usage-aware grace, where the provider reports a key's last use: the old key is held
    # past ``grace`` until unused for ``quiet_period``, and ``max_grace`` (from the store)
    # at the longest. Both or neither, here or in [defaults].
    quiet_period: Duration | None = None
    max_grace: Duration | None = None
    probe: ProbeConfig | None = None
    schedule: ScheduleConfig | None = None


# Target names appear in key names, metric labels and lease rows: keep them plain.
_TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class Config(Frozen):
    database: DatabaseConfig = DatabaseConfig()
    daemon: DaemonConfig = DaemonConfig()
    logging: LoggingConfig = LoggingConfig()
    audit: AuditConfig | None = None
    vault: VaultConfig
    providers: dict[str, ProviderConfig] = Field(min_length=1)
    defaults: DefaultsConfig = DefaultsConfig()
    targets: dict[str, TargetConfig] = Field(min_length=1)
    notifications: NotificationsConfig = NotificationsConfig()
    source: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _targets_name_providers(self) -> Config:
        for name, target in self.targets.items():
            if not _TARGET_NAME.match(name):
                raise KeyedProblem(f"targets.{name}", "a target name is 1-100 letters, digits, "
                                  "'_', '.' or '-', starting with a letter or digit")
            if target.provider not in self.providers:
                known = ", ".join(sorted(self.providers)) or "none"
                raise KeyedProblem(f"targets.{name}.provider",
                                  f"names no configured provider (configured: {known})")
            self._check_usage_grace(name)
        for name, provider in self.providers.items():
            if len(name) > NAME_MAX:
                raise KeyedProblem(f"providers.{name[:40]}…",
                                   f"a provider name is at most {NAME_MAX} characters")
            self._check_management_target(name, provider)
        return self

    def _check_usage_grace(self, name: str) -> None:
        target = self.targets[name]
        quiet, most = self._usage_grace_values(name)
        # The key the problem is reported at: the target's if it sets one, else [defaults].
        where = (f"targets.{name}" if target.quiet_period is not None
                 or target.max_grace is not None else "defaults")
        if (quiet is None) != (most is None):
            given, missing = (("quiet_period", "max_grace") if most is None
                              else ("max_grace", "quiet_period"))
            raise KeyedProblem(f"{where}.{given}", f"usage-aware grace needs {missing} too "
                               f"(target {name})")
        if quiet is None or most is None:
            return
        if quiet <= 0:
            raise KeyedProblem(f"{where}.quiet_period", "must be longer than 0s")
        if quiet >= most:
            raise KeyedProblem(f"{where}.quiet_period",
                               f"must be shorter than max_grace (target {name})")
        if most < self.grace_for(name):
            raise KeyedProblem(f"{where}.max_grace",
                               f"must not be shorter than grace (target {name})")

    def _usage_grace_values(self, name: str) -> tuple[float | None, float | None]:
        target = self.targets[name]
        if target.quiet_period is not None or target.max_grace is not None:
            return target.quiet_period, target.max_grace
        return self.defaults.quiet_period, self.defaults.max_grace

    def _check_management_target(self, name: str, provider: ProviderConnection) -> None:
        own = provider.management_key_target
        if own is None:
            return
        key = f"providers.{name}.management_key_target"
        target = self.targets.get(own)
        if target is None:
            known = ", ".join(sorted(self.targets))
            raise KeyedProblem(key, f"names no configured target (configured: {known})")
        if target.provider != name:
            raise KeyedProblem(key, f"names target {own}, whose provider is "
                               f"{target.provider}, not {name}: the management key must be "
                               "a key of this provider")

    def call_deadline(self) -> float:
        """The longest one provider or Vault call may take, its retries included, in seconds.

        A retry loop starts no attempt after ``max_elapsed`` and each attempt ends within
        ``timeout``: a take-over waits this long past a lapsed lease before it reads what
        an undecided call of the holder before it may have done.
        """
        clients = [(self.vault.timeout, self.vault.retry),
                   *((p.timeout, p.retry) for p in self.providers.values())]
        return max(timeout + retry.max_elapsed for timeout, retry in clients)

    def target(self, name: str) -> TargetConfig:
        """The target called ``name``; ``UsageError`` naming the configured ones if none is."""
        target = self.targets.get(name)
        if target is None:
            where = f" in {self.source}" if self.source is not None else ""
            close = difflib.get_close_matches(name, self.targets, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UsageError(f"unknown target {name!r}{where} "
                             f"(configured: {', '.join(sorted(self.targets))}){hint}")
        return target

    def require_targets(self, names: Iterable[str]) -> None:
        """``UsageError`` for the first of ``names`` that is not a configured target."""
        for name in names:
            self.target(name)

    def grace_for(self, target: str) -> float:
        grace = self.target(target).grace
        return self.defaults.grace if grace is None else grace

    def usage_grace_for(self, target: str) -> tuple[float, float] | None:
        """``(quiet_period, max_grace)`` of a target with usage-aware grace, else None."""
        self.target(target)
        quiet, most = self._usage_grace_values(target)
        return None if quiet is None or most is None else (quiet, most)

    def probe_for(self, target: str) -> ProbeConfig:
        return self.target(target).probe or self.defaults.probe

    def schedule_for(self, target: str) -> Schedule:
        return resolve_schedule(self.defaults.schedule, self.target(target).schedule)


def load_config(path: str | Path) -> Config:
    """Read and validate ``path``; ``ConfigError`` lists every problem by key and line."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror}", file=file) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8 text (byte {exc.start})", file=file) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}", file=file) from None
    except RecursionError:   # tomllib recurses into nested arrays and inline tables
        raise ConfigError(f"{file}: not valid TOML: arrays or inline tables nested too deeply",
                          file=file) from None
    data, url_from_env = with_vault_addr(data, os.environ)
    try:
        return Config.model_validate({**data, "source": file})
    except ValidationError as exc:
        problems = explain_vault_url(problems_by_key(exc, text), url_from_env)
        count = len(problems)
        raise ConfigError(
            f"{file}: {count} problem{'s' if count != 1 else ''} in the config", problems,
            file=file,
        ) from None
