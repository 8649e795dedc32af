"""The "alt" layout: Count's semantics under another SaaS's wire shape.

The generic HTTP provider (``type = "http"``) is proven by driving this layout, so it
shares nothing with Count's paths, field names, envelope, auth header or rate-limit
header names (docs/emulator.md has the table). The routes stay Count's: ``inbound`` turns
an alt request into the Count request it means (or refuses it), ``outbound`` turns the
Count reply into the alt one. Count's own paths are not served in this layout.

    GET    /api/2/me                                         whoami
    GET    /api/2/accounts                                   the service accounts
    GET    /api/2/accounts/{sa}/credentials                  list keys
    POST   /api/2/accounts/{sa}/credentials                  create: {"credential": {"label"}}
    DELETE /api/2/accounts/{sa}/credentials/{id}             delete: 204, no body

Auth: ``X-Auth-Token: Key <secret>``. Success: ``{"data": {...}, "meta": {"trace": id}}``;
failure: ``{"errors": [{"code", "title"}], "meta": {"trace": id}}``; ``X-Trace-Id`` on
every reply; ``X-RateLimit-Limit``, ``-Remaining``, ``-Reset`` for Count's ``RateLimit-*``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from rotator.emulator.envelope import Reply, Request

__all__ = ["AUTH_HEADER", "AUTH_SCHEME", "credential", "inbound", "outbound"]

AUTH_HEADER = "X-Auth-Token"
AUTH_SCHEME = "Key"

_ME = re.compile(r"/api/2/me")
_ACCOUNTS = re.compile(r"/api/2/accounts")
_CREDENTIALS = re.compile(r"/api/2/accounts/(?P<sa>[^/]+)/credentials")
_CREDENTIAL = re.compile(r"/api/2/accounts/(?P<sa>[^/]+)/credentials/(?P<id>[^/]+)")

# Count's error codes as the alt API spells them; others pass through unchanged.
_CODES = {"key_not_found": "credential_not_found", "key_limit_reached": "quota_exceeded",
          "unauthorized": "unauthenticated", "forbidden": "permission_denied",
          "rate_limited": "throttled"}
_HEADERS = {"ratelimit-limit": "X-RateLimit-Limit",
            "ratelimit-remaining": "X-RateLimit-Remaining",
            "ratelimit-reset": "X-RateLimit-Reset", "x-request-id": "X-Trace-Id"}


def credential(header: str | None) -> str | None:
    """The key presented in ``X-Auth-Token: Key <secret>`` (``header``), if any."""
    scheme, _, token = (header or "").strip().partition(" ")
    return (token.strip() or None) if scheme == AUTH_SCHEME else None


def inbound(request: Request) -> tuple[Request, str] | Reply:
    """The Count request an alt request means, and its operation; or the alt refusal."""
    path, method = request.path, request.method
    count: str | None = None
    body = request.body
    if _ME.fullmatch(path):
        op, count = "whoami", "/v1/whoami"
    elif _ACCOUNTS.fullmatch(path):
        op, count = "accounts", "/v1/service-accounts"
    elif match := _CREDENTIALS.fullmatch(path):
        op, count = ("create" if method == "POST" else "list",
                     f"/v1/service-accounts/{match['sa']}/api-keys")
        if method == "POST":
            label = _label(body)
            if isinstance(label, Reply):
                return label
            body = json.dumps({"name": label}).encode()
    elif match := _CREDENTIAL.fullmatch(path):
        op, count = "delete", f"/v1/service-accounts/{match['sa']}/api-keys/{match['id']}"
    else:
        return _failure(404, "not_found", "no such endpoint", {})
    return Request(method, count, request.bearer, body), op


def _label(body: bytes) -> object:
    try:
        document = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        return _failure(400, "invalid_request", "the body is not valid JSON", {})
    inner = document.get("credential") if isinstance(document, dict) else None
    if not isinstance(inner, dict):
        return _failure(400, "invalid_request", "the body must be {\"credential\": {...}}", {})
    return inner.get("label")


def outbound(reply: Reply, op: str | None) -> Reply:
    """The alt form of a Count reply (``op`` None: a reply no route made, a fault's)."""
    headers = {_HEADERS.get(name.lower(), name): value for name, value in reply.headers.items()}
    if not reply.content_type.startswith("application/json"):
        return Reply(reply.status, reply.body, reply.content_type, headers)  # an HTML page
    document = json.loads(reply.body)
    trace = document.get("request_id")
    if document.get("success") is not True:
        error = document.get("error") or {}
        return _failure(reply.status, str(error.get("code")), str(error.get("message")),
                        headers, trace)
    if op == "delete":
        return Reply(204, b"", "application/json", headers)
    data = _DATA[op or ""](document.get("result") or {})
    body = json.dumps({"data": data, "meta": {"trace": trace}}).encode()
    return Reply(200, body, "application/json", headers)


def _failure(status: int, code: str, message: str, headers: Mapping[str, str],
             trace: object = None) -> Reply:
    body = {"errors": [{"code": _CODES.get(code, code), "title": message}],
            "meta": {"trace": trace}}
    return Reply(status, json.dumps(body).encode(), "application/json", dict(headers))


def _key(key: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": key.get("key_id"), "label": key.get("name"), "issued": key.get("created_at"),
            "last_seen": key.get("last_used_at")}


_DATA: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "whoami": lambda r: {"account": r.get("service_account_id"),
                         "credential": r.get("key_id")},
    "accounts": lambda r: {"accounts": r.get("service_accounts")},
    "list": lambda r: {"credentials": [_key(k) for k in r.get("api_keys") or []]},
    "create": lambda r: {"credential": {**_key(r), "token": r.get("api_key")}},
}
