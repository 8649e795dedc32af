"""``type = "http"``: a key provider described in TOML, for a SaaS with Count's shape.

Any API whose keys are listed, created, deleted and probed by one call each, with a key
sent in one header, is driven by ``rotator.adapters.http_provider`` from this definition:
for each call its method, path template, expected status and body template, and where
(RFC 6901 JSON pointers) its answer keeps the key id, the secret, the name and the times.
Every template may use only the placeholders its call fills in and every pointer must be
one, so a typo is a config problem named by key and line, not a failed request at 3 a.m.
"""

from __future__ import annotations

import re
from string import Formatter
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from rotator.config.base import Frozen
from rotator.config.json_pointer import parse_pointer
from rotator.config.provider import ProviderConnection

__all__ = ["CreateCall", "DeleteCall", "HttpProviderConfig", "ListCall", "ProbeCall",
           "RateLimitHeaders", "pointer_tokens"]

_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")   # RFC 9110 token
_METHODS = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


def _placeholders(template: str) -> set[str]:
    try:
        return {name for _, name, _, _ in Formatter().parse(template) if name is not None}
    except ValueError:  # an unbalanced brace
        raise ValueError("has an unbalanced '{' or '}' (write a brace as '{{' or '}}')") from None


def _check_placeholders(template: str, allowed: frozenset[str]) -> None:
    if not _placeholders(template) <= allowed:
        names = ", ".join("{" + name + "}" for name in sorted(allowed))
        may = f"only the placeholders {names}" if names else "no placeholders"
        raise ValueError(f"may use {may}")


def _strings(value: object) -> list[str]:
    """Every string in a body template, keys and values, however deep."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def _pointer(value: str | None) -> str | None:
    if value is not None:
        parse_pointer(value)
    return value


def pointer_tokens(value: str) -> tuple[str, ...]:
    """A validated pointer's tokens (for the adapter)."""
    return parse_pointer(value)


class _Call(Frozen):
    """One call: method, path template, the status that means success, a body template.

    The body is a TOML table sent as JSON; each of its strings is a template too, filled
    in as a whole value (no JSON is ever assembled from text).
    """

    _secret_keys: ClassVar[frozenset[str]] = frozenset()   # "secret" here is a pointer
    _fills: ClassVar[frozenset[str]] = frozenset()

    method: _METHODS = "GET"
    path: str
    status: int = Field(default=200, ge=200, le=299)
    body: dict[str, Any] | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("path must start with '/'")
        _check_placeholders(value, cls._fills)
        return value

    @field_validator("body")
    @classmethod
    def _body(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        for text in _strings(value):
            _check_placeholders(text, cls._fills)
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _pointers(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name not in ("method", "path", "status", "body", "gone_status",
                                   "gone_code") and isinstance(value, str):
            _pointer(value)
        return value


class ListCall(_Call):
    """``items`` points at the array of keys; the others into each item of it."""

    _fills = frozenset({"service_account"})
    items: str
    key_id: str
    name: str
    created_at: str
    last_used_at: str | None = None   # None: the provider does not say when a key was used


class CreateCall(_Call):
    _fills = frozenset({"service_account", "name"})
    method: _METHODS = "POST"
    key_id: str
    secret: str
    name: str | None = None           # None: the answer does not repeat it
    created_at: str | None = None


class DeleteCall(_Call):
    """No pointer: a status of ``status`` is done. ``gone_status`` (with ``gone_code``,
    if the provider gives one) is "no such key", done before: success too."""

    _fills = frozenset({"service_account", "key_id"})
    method: _METHODS = "DELETE"
    gone_status: int = Field(default=404, ge=400, le=499)
    gone_code: str | None = None


class ProbeCall(_Call):
    """Who the key is: any request a live key answers with its account and key ids."""

    service_account: str
    key_id: str


class RateLimitHeaders(Frozen):
    remaining: str = "RateLimit-Remaining"
    reset: str = "RateLimit-Reset"
    limit: str = "RateLimit-Limit"
    retry_after: str = "Retry-After"

    @field_validator("*")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _HEADER_NAME.fullmatch(value):
            raise ValueError("is not an HTTP header name")
        return value


class HttpProviderConfig(ProviderConnection):
    type: Literal["http"]
    auth_header: str = "Authorization"
    auth_format: str = "Bearer {key}"
    request_id_header: str | None = "X-Request-Id"
    request_id: str | None = None      # pointer: the request id in an answer's body
    error_code: str | None = None      # pointer: the error code in an error's body
    error_message: str | None = None   # pointer: its message (kept only if plain text)
    key_limit_code: str | None = None  # the error code of a 409 "account holds its maximum"
    rate_limit: RateLimitHeaders = RateLimitHeaders()
    list_keys: ListCall
    create_key: CreateCall
    delete_key: DeleteCall
    probe: ProbeCall

    @field_validator("auth_header", "request_id_header")
    @classmethod
    def _header(cls, value: str | None) -> str | None:
        if value is not None and not _HEADER_NAME.fullmatch(value):
            raise ValueError("is not an HTTP header name")
        return value

    @field_validator("auth_format")
    @classmethod
    def _format(cls, value: str) -> str:
        if _placeholders(value) != {"key"} or not value.isprintable():
            raise ValueError("must hold the placeholder {key} once, and no other "
                             "(e.g. 'Bearer {key}' or '{key}')")
        if value.count("{key}") != 1:
            raise ValueError("must hold the placeholder {key} once")
        return value

    @field_validator("request_id", "error_code", "error_message")
    @classmethod
    def _pointers(cls, value: str | None) -> str | None:
        return _pointer(value)
