"""The config file: TOML parsed once into frozen, validated objects.

Every problem is reported at once, each naming its dotted key, the file and (where the
key is written in it) the line. Secrets never live in the TOML: a key holding one names
an environment variable (``*_env``) or a file (``*_file``) instead; see ``secrets.py``.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from rotator.durations import parse_duration
from rotator.errors import ConfigError
from rotator.scheduling.schedule import Schedule, Window, check_cron, check_timezone, parse_window

__all__ = [
    "Config",
    "CountPathsConfig",
    "CountProviderConfig",
    "DaemonConfig",
    "DatabaseConfig",
    "LoggingConfig",
    "ProbeConfig",
    "RetryConfig",
    "ScheduleConfig",
    "TargetConfig",
    "VaultAppRoleAuth",
    "VaultConfig",
    "VaultKubernetesAuth",
    "VaultTokenAuth",
    "load_config",
]

Duration = Annotated[float, BeforeValidator(parse_duration)]

# Keys that would hold a secret if written inline; the message tells what to write instead.
_INLINE_SECRET_KEYS = {"token", "secret_id", "management_key", "api_key", "password", "secret"}


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    _secret_keys: ClassVar[frozenset[str]] = frozenset(_INLINE_SECRET_KEYS)

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in cls._secret_keys & data.keys():
                raise ValueError(
                    f"'{key}' must not be written in the config file: "
                    f"name an environment variable with '{key}_env' or a file with '{key}_file'"
                )
        return data

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # No file path, environment variable, URL or header can hold one.
        if isinstance(value, str | Path) and "\x00" in str(value):
            raise ValueError("must not contain a NUL character")
        return value


def _check_url(value: str, *, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"invalid URL {value!r}: expected {' or '.join(schemes)}://host[:port]")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError(f"invalid URL {value!r}: bad port") from None
    return value.rstrip("/")


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RetryConfig(_Frozen):
    max_attempts: int = Field(default=5, ge=1, le=100)
    base_delay: Duration = 0.2
    max_delay: Duration = 10.0
    max_elapsed: Duration = 60.0


class CountPathsConfig(_Frozen):
    _secret_keys: ClassVar[frozenset[str]] = frozenset()  # "api_key" here is a path name

    service_accounts: str = "/v1/service-accounts"
    api_keys: str = "/v1/service-accounts/{service_account}/api-keys"
    api_key: str = "/v1/service-accounts/{service_account}/api-keys/{key_id}"
    whoami: str = "/v1/whoami"

    @field_validator("*")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"path must start with '/', got {value!r}")
        return value


class CountProviderConfig(_Frozen):
    type: Literal["count"]
    base_url: str
    auth_mode: Literal["admin", "self"] = "admin"
    management_key_env: str | None = None
    management_key_file: Path | None = None
    timeout: Duration = 10.0
    ca_bundle: Path | None = None
    allow_insecure_http: bool = False
    paths: CountPathsConfig = CountPathsConfig()
    retry: RetryConfig = RetryConfig()

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value, schemes=("https", "http"))

    @model_validator(mode="after")
    def _consistent(self) -> CountProviderConfig:
        given = [k for k in ("management_key_env", "management_key_file") if getattr(self, k)]
        if self.auth_mode == "admin" and len(given) != 1:
            raise ValueError("auth_mode 'admin' needs exactly one of "
                             "management_key_env or management_key_file")
        if self.auth_mode == "self" and given:
            raise ValueError("auth_mode 'self' uses each account's own key from Vault; "
                             f"remove {given[0]}")
        _refuse_plain_http(self.base_url, self.allow_insecure_http)
        return self


def _refuse_plain_http(url: str, allowed: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme == "http" and not allowed and not is_loopback_host(parts.hostname or ""):
        raise ValueError(f"plain http:// to a non-loopback host ({url}) sends keys in clear; "
                         "use https or set allow_insecure_http = true")


class VaultTokenAuth(_Frozen):
    method: Literal["token"] = "token"
    token_env: str | None = "VAULT_TOKEN"  # noqa: S105 (the variable's name, not a token)
    token_file: Path | None = None


class VaultAppRoleAuth(_Frozen):
    method: Literal["approle"]
    role_id: str = Field(min_length=1)
    secret_id_env: str | None = None
    secret_id_file: Path | None = None
    mount: str = "approle"

    @model_validator(mode="after")
    def _one_source(self) -> VaultAppRoleAuth:
        if bool(self.secret_id_env) == bool(self.secret_id_file):
            raise ValueError("approle needs exactly one of secret_id_env or secret_id_file")
        return self


class VaultKubernetesAuth(_Frozen):
    method: Literal["kubernetes"]
    role: str = Field(min_length=1)
    jwt_path: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    mount: str = "kubernetes"


VaultAuthConfig = Annotated[
    VaultTokenAuth | VaultAppRoleAuth | VaultKubernetesAuth, Field(discriminator="method")
]


class VaultConfig(_Frozen):
    url: str
    namespace: str | None = None
    ca_bundle: Path | None = None
    allow_insecure_http: bool = False
    timeout: Duration = 10.0
    auth: VaultAuthConfig = VaultTokenAuth()
    retry: RetryConfig = RetryConfig()

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value, schemes=("https", "http"))

    @model_validator(mode="after")
    def _secure(self) -> VaultConfig:
        _refuse_plain_http(self.url, self.allow_insecure_http)
        return self


class DatabaseConfig(_Frozen):
    url: str = "sqlite:///rotator.db"

    @field_validator("url")
    @classmethod
    def _supported(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgresql+psycopg://")):
            raise ValueError("expected sqlite:///PATH or postgresql+psycopg://user@host/db")
        return value


class ProbeConfig(_Frozen):
    timeout: Duration = 60.0      # how long a new key may take to propagate
    interval: Duration = 1.0      # first wait between probes (doubles, capped at 10 s)


def _window(value: object) -> object:
    return parse_window(value) if isinstance(value, str) else value


class ScheduleConfig(_Frozen):
    """When the daemon rotates a target. Unset keys fall back to ``[defaults.schedule]``."""

    every: Duration | None = None
    cron: str | None = None
    timezone: str | None = None
    window: Annotated[Window, BeforeValidator(_window)] | None = None
    jitter: Duration | None = None
    max_key_age: Duration | None = None
    retry_failed_after: Duration | None = None
    enabled: bool | None = None

    @field_validator("every")
    @classmethod
    def _positive(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("must be longer than 0s")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            check_timezone(value)
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> ScheduleConfig:
        if self.every is not None and self.cron is not None:
            raise ValueError("set either 'every' or 'cron', not both")
        if self.cron is not None:
            check_cron(self.cron, self.timezone or "UTC")
        return self


# What a target gets when neither it nor [defaults.schedule] says otherwise.
_BUILTIN_SCHEDULE = Schedule(every=30 * 86400.0)


def resolve_schedule(default: ScheduleConfig, own: ScheduleConfig | None) -> Schedule:
    """The target's table wins key by key; ``every``/``cron`` are one choice, taken whole."""
    own = own or ScheduleConfig()
    if own.every is not None or own.cron is not None:
        every, cron = own.every, own.cron
    elif default.every is not None or default.cron is not None:
        every, cron = default.every, default.cron
    else:
        every, cron = _BUILTIN_SCHEDULE.every, None

    def pick(key: str, builtin: object) -> Any:
        for table in (own, default):
            value = getattr(table, key)
            if value is not None:
                return value
        return builtin

    base = _BUILTIN_SCHEDULE
    return Schedule(
        every=every, cron=cron, timezone=pick("timezone", base.timezone),
        window=pick("window", base.window), jitter=pick("jitter", base.jitter),
        max_key_age=pick("max_key_age", base.max_key_age),
        retry_failed_after=pick("retry_failed_after", base.retry_failed_after),
        enabled=pick("enabled", base.enabled))


class DefaultsConfig(_Frozen):
    grace: Duration = 3600.0
    lease_ttl: Duration = 300.0
    probe: ProbeConfig = ProbeConfig()
    schedule: ScheduleConfig = ScheduleConfig()


def _listen_address(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected HOST:PORT as a string (e.g. '0.0.0.0:9108'), got {value!r}")
    _, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT (e.g. '0.0.0.0:9108'), got {value!r}")
    return value


class DaemonConfig(_Frozen):
    """``rotator run``: where health and metrics are served, how often SQL is re-read."""

    listen: Annotated[str, BeforeValidator(_listen_address)] = "0.0.0.0:9108"
    poll_interval: Duration = 60.0
    shutdown_timeout: Duration = 25.0
    workers: int = Field(default=4, ge=1, le=64)

    @field_validator("poll_interval")
    @classmethod
    def _sane_poll(cls, value: float) -> float:
        if value < 0.05:
            raise ValueError("must be at least 50ms")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]") or "0.0.0.0"  # noqa: S104

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class LoggingConfig(_Frozen):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class TargetConfig(_Frozen):
    provider: str
    service_account: str = Field(min_length=1)
    vault_mount: str = "secret"
    vault_path: str = Field(min_length=1)
    vault_field: str = "api_key"
    grace: Duration | None = None
    probe: ProbeConfig | None = None
    schedule: ScheduleConfig | None = None


# Target names appear in key names, metric labels and lease rows: keep them plain.
_TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class Config(_Frozen):
    database: DatabaseConfig = DatabaseConfig()
    daemon: DaemonConfig = DaemonConfig()
    logging: LoggingConfig = LoggingConfig()
    vault: VaultConfig
    providers: dict[str, CountProviderConfig] = Field(min_length=1)
    defaults: DefaultsConfig = DefaultsConfig()
    targets: dict[str, TargetConfig] = Field(min_length=1)
    source: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _targets_name_providers(self) -> Config:
        for name, target in self.targets.items():
            if not _TARGET_NAME.match(name):
                raise _KeyedError(f"targets.{name}", "a target name is 1-100 letters, digits, "
                                  "'_', '.' or '-', starting with a letter or digit")
            if target.provider not in self.providers:
                known = ", ".join(sorted(self.providers)) or "none"
                raise _KeyedError(f"targets.{name}.provider",
                                  f"unknown provider {target.provider!r} (configured: {known})")
        return self

    def grace_for(self, target: str) -> float:
        grace = self.targets[target].grace
        return self.defaults.grace if grace is None else grace

    def probe_for(self, target: str) -> ProbeConfig:
        return self.targets[target].probe or self.defaults.probe

    def schedule_for(self, target: str) -> Schedule:
        return resolve_schedule(self.defaults.schedule, self.targets[target].schedule)


class _KeyedError(ValueError):
    """A cross-field problem that belongs to one key deeper than the validator's own."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}::{message}")


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
    try:
        return Config.model_validate({**data, "source": file})
    except ValidationError as exc:
        problems = _problems(exc, text)
        count = len(problems)
        raise ConfigError(
            f"{file}: {count} problem{'s' if count != 1 else ''} in the config", problems,
            file=file,
        ) from None


def _problems(exc: ValidationError, text: str) -> dict[str, str]:
    problems: dict[str, str] = {}
    for err in exc.errors():
        loc = _key_path(err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if "::" in msg:
            key, msg = msg.split("::", 1)
        else:
            key = ".".join(loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        line = _line_of(text, key)
        problems[key] = f"{msg} (line {line})" if line else msg
    return problems


# How pydantic names a validator or union member in a location: "function-after[f(), str]".
_PYDANTIC_TAG = re.compile(r"[a-z][a-z0-9-]*\[.*\]")


def _key_path(loc: tuple[int | str, ...]) -> list[str]:
    # pydantic puts validator names and the union member's tag in locations: not keys.
    path: list[str] = []
    for part in loc:
        text = str(part)
        if _PYDANTIC_TAG.fullmatch(text) or (
                path[-1:] == ["auth"] and text in {"token", "approle", "kubernetes"}):
            continue
        path.append(text)
    return path


def _line_of(text: str, dotted: str) -> int | None:
    """The line where ``dotted`` (``targets.x.grace``) is written, if it is."""
    *table, leaf = dotted.split(".")
    current: list[str] = []
    # Not splitlines(): TOML breaks lines at "\n" only, not at a "\x85" or "\u2028" that a
    # string or comment holds.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            current = [p.strip().strip('"') for p in line.strip("[]").split(".")]
            if current == [*table, leaf]:
                return number
            continue
        key = line.split("=", 1)[0].strip().strip('"')
        if "=" in line and key == leaf and current == table:
            return number
    return None
