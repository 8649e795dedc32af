"""What every provider's table holds (``ProviderConnection``: where it is, how rotator
authenticates to it, timeouts, TLS, proxy, retries), and the Count API's path templates:
one frozen definition, read from ``[providers.*.paths]`` and used by
``rotator.adapters.count.client`` to build every request.

Each template must be absolute and may use only the placeholders its call fills in, so a
typo is a config problem named by key and line, not a failed request at 3 a.m.
"""

from __future__ import annotations

from pathlib import Path
from string import Formatter
from typing import Any, ClassVar, Literal

from pydantic import ValidationError, ValidationInfo, field_validator, model_validator

from rotator.config.base import (
    Duration,
    Frozen,
    check_proxy_url,
    check_url,
    refuse_plain_http,
)
from rotator.config.retry import RetryPolicy
from rotator.core.errors import ConfigError

__all__ = ["CountPaths", "ProviderConnection"]


class ProviderConnection(Frozen):
    """The keys every ``[providers.NAME]`` has, whatever its ``type``."""

    base_url: str
    auth_mode: Literal["admin", "self"] = "admin"
    management_key_env: str | None = None
    management_key_file: Path | None = None
    # Self-rotation: the management key is the current secret of this target (which
    # rotator rotates like any other), instead of a variable or a file.
    management_key_target: str | None = None
    timeout: Duration = 10.0
    ca_bundle: Path | None = None
    allow_insecure_http: bool = False
    proxy: str | None = None   # the environment's proxy variables are never read
    retry: RetryPolicy = RetryPolicy()

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value, schemes=("https", "http"))

    def _needs_secrets(self) -> bool:
        # 'self' uses each account's own key from Vault; a management_key_target, its
        # target's current key from Vault.
        return self.auth_mode == "admin" and self.management_key_target is None

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, value: str | None) -> str | None:
        return None if value is None else check_proxy_url(value)

    @model_validator(mode="after")
    def _consistent(self) -> ProviderConnection:
        given = [k for k in ("management_key_env", "management_key_file") if getattr(self, k)]
        if self.auth_mode == "self" and given:
            raise ValueError("auth_mode 'self' uses each account's own key from Vault; "
                             f"remove {given[0]}")
        if self.management_key_target is not None:
            if self.auth_mode != "admin":
                raise ValueError("management_key_target is for auth_mode 'admin' only "
                                 "(in 'self' mode each account's own key manages it)")
            if given:
                raise ValueError("management_key_target names where the management key "
                                 f"comes from, as does {given[0]}: keep one of the two")
        refuse_plain_http(self.base_url, self.allow_insecure_http)
        return self

_PLACEHOLDERS: dict[str, frozenset[str]] = {
    "service_accounts": frozenset(), "api_keys": frozenset({"service_account"}),
    "api_key": frozenset({"service_account", "key_id"}), "whoami": frozenset(),
}


def _placeholders(template: str) -> set[str] | None:
    try:
        return {name for _, name, _, _ in Formatter().parse(template) if name is not None}
    except ValueError:  # an unbalanced brace
        return None


class CountPaths(Frozen):
    """Path templates of the contract's calls; config may override each."""

    _secret_keys: ClassVar[frozenset[str]] = frozenset()  # "api_key" here is a path name

    # No call uses it any more; kept so config files that set it still load.
    service_accounts: str = "/v1/service-accounts"
    api_keys: str = "/v1/service-accounts/{service_account}/api-keys"
    api_key: str = "/v1/service-accounts/{service_account}/api-keys/{key_id}"
    whoami: str = "/v1/whoami"

    def __init__(self, **data: Any) -> None:
        # Built in code, a bad template is a ConfigError naming its key, as the adapters'
        # other config problems are. Read from the file, it must stay a ValidationError so
        # load_config reports it with every other problem, by key and line: the flag below
        # makes pydantic validate a nested table without calling this __init__.
        try:
            super().__init__(**data)
        except ValidationError as exc:
            first = exc.errors()[0]
            cause = first.get("ctx", {}).get("error")
            key = ".".join(["paths", *(str(part) for part in first["loc"][:1])])
            raise ConfigError(str(cause) if cause is not None else first["msg"],
                              key=key) from None

    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @field_validator("*")
    @classmethod
    def _template(cls, value: str, info: ValidationInfo) -> str:
        if not value.startswith("/"):
            raise ValueError("path must start with '/'")
        allowed = _PLACEHOLDERS[info.field_name or ""]
        used = _placeholders(value)
        if used is None:
            raise ValueError("path has an unbalanced '{' or '}'")
        if not used <= allowed:
            names = ", ".join("{" + name + "}" for name in sorted(allowed))
            may = f"only the placeholders {names}" if names else "no placeholders"
            raise ValueError(f"path may use {may}")
        return value
