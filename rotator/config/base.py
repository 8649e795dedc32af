"""The building blocks of the config models: the frozen base class, durations, URL checks.

``Frozen`` forbids unknown keys, refuses secrets written inline (a key that would hold
one must name an environment variable or a file instead) and NUL characters anywhere, and
applies ``secret_sources``' rule to every secret a model names (a ``<name>_env`` and a
``<name>_file`` key): exactly one source, and a ``*_env`` that is a variable's name.
No message here quotes the value it refuses.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rotator.config.secret_sources import check_env_name, check_sources, secret_names
from rotator.core.durations import parse_duration

__all__ = ["Duration", "Frozen", "check_proxy_url", "check_url", "check_vault_path",
           "is_loopback_host", "refuse_plain_http"]

Duration = Annotated[float, BeforeValidator(parse_duration)]

# Keys that would hold a secret if written inline; the message tells what to write instead.
_INLINE_SECRET_KEYS = {"token", "secret_id", "management_key", "api_key", "password", "secret"}


class Frozen(BaseModel):
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
    def _no_nul(cls, value: Any, info: ValidationInfo) -> Any:
        # No file path, environment variable, URL or header can hold one.
        if isinstance(value, str | Path) and "\x00" in str(value):
            raise ValueError("must not contain a NUL character")
        if isinstance(value, str) and value and (info.field_name or "").endswith("_env"):
            check_env_name(value)
        return value

    @model_validator(mode="after")
    def _one_source_per_secret(self) -> Self:
        check_sources(self, secret_names(type(self).model_fields),
                      required=self._needs_secrets())
        return self

    def _needs_secrets(self) -> bool:
        """Whether this model's secrets must be named (a model may not need them)."""
        return True


def check_url(value: str, *, schemes: tuple[str, ...]) -> str:
    """``value`` without a trailing '/'; a message never quotes it (it may hold a password)."""
    parts = urlsplit(value)
    expected = f"expected {' or '.join(schemes)}://host[:port]"
    if "@" in parts.netloc:
        # user:password@ would send (and a log line would show) a credential: name a file
        # or variable for it instead.
        raise ValueError(f"invalid URL: user info ('user:password@') is not allowed; {expected}")
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"invalid URL: {expected}")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError(f"invalid URL: bad port; {expected}") from None
    return value.rstrip("/")


def check_vault_path(value: str) -> str:
    """A Vault mount or path: '/'-separated segments, none empty, '.' or '..'.

    Vault normalises ``a/../b`` to ``b``, so a path that climbs would reach a secret the
    target never named (only the policy would stop it). The message quotes no segment.
    """
    if not value:
        raise ValueError("must not be empty")
    if value.startswith("/") or value.endswith("/"):
        raise ValueError("must not start or end with '/'")
    segments = value.split("/")
    if any(segment == "" for segment in segments):
        raise ValueError("must not hold an empty segment ('//')")
    if any(segment in (".", "..") for segment in segments):
        raise ValueError("must not hold a '.' or '..' segment")
    return value


def check_proxy_url(value: str) -> str:
    """An HTTP(S) proxy URL. The message never repeats the value: it may be mistyped
    credentials. A proxy needing credentials is refused: they would sit in the TOML."""
    try:
        parts = urlsplit(value)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise ValueError("expected http://host:port or https://host:port")
    if parts.username is not None or parts.password is not None:
        raise ValueError("a proxy URL must not hold credentials (they would be written "
                         "in the config file)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("a proxy URL is scheme://host:port, with no path or query")
    return value.rstrip("/")


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refuse_plain_http(url: str, allowed: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme == "http" and not allowed and not is_loopback_host(parts.hostname or ""):
        raise ValueError("plain http:// to a non-loopback host sends keys in clear; "
                         "use https or set allow_insecure_http = true")
