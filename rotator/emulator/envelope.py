"""The emulator's wire format: request and reply values, envelopes, API errors.

A ``Request`` is what the HTTP layer hands inward (method, path, bearer, body); a
``Reply`` is what it writes back. ``success`` and ``failure`` build the contract's
envelopes, each with a fresh request id echoed in ``X-Request-Id``. ``ApiError`` is
how the model and the routes refuse a call; ``failure_from`` turns it into a reply.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ApiError",
    "Reply",
    "Request",
    "failure",
    "failure_from",
    "html_error",
    "new_request_id",
    "success",
]

_PROXY_PAGE = (
    "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


class ApiError(Exception):
    """A refusal the API answers with an error envelope."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str                        # without the query string
    bearer: str | None = field(default=None, repr=False)  # the key presented, if any
    body: bytes = field(default=b"", repr=False)

    def json(self) -> Any:
        """The body parsed as JSON; ApiError 400 when it is not JSON."""
        try:
            return json.loads(self.body or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "invalid_request", "the body is not valid JSON") from exc

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object; ApiError 400 for anything else."""
        body = self.json()
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_request", "the body must be a JSON object")
        return body


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)

    def with_headers(self, extra: Mapping[str, str]) -> Reply:
        if not extra:
            return self
        return Reply(self.status, self.body, self.content_type, {**self.headers, **extra})

    def json(self) -> Any:
        """The body parsed as JSON (for tests of the routes without a server)."""
        return json.loads(self.body)


def new_request_id() -> str:
    return "req_" + secrets.token_hex(8)


def _envelope(status: int, payload: dict[str, Any],
              headers: Mapping[str, str] | None) -> Reply:
    request_id = new_request_id()
    body = json.dumps({"success": status < 400, "request_id": request_id, **payload})
    return Reply(status, body.encode(), "application/json",
                 {"X-Request-Id": request_id, **(headers or {})})


def success(result: Mapping[str, Any], status: int = 200,
            headers: Mapping[str, str] | None = None) -> Reply:
    """``{"success": true, "request_id": ..., "result": {...}}``."""
    return _envelope(status, {"result": dict(result)}, headers)


def failure(status: int, code: str, message: str,
            headers: Mapping[str, str] | None = None) -> Reply:
    """``{"success": false, "request_id": ..., "error": {"code", "message"}}``."""
    return _envelope(status, {"error": {"code": code, "message": message}}, headers)


def failure_from(error: ApiError, headers: Mapping[str, str] | None = None) -> Reply:
    return failure(error.status, error.code, error.message, headers)


def html_error(status: int, reason: str) -> Reply:
    """A non-JSON error page, as a reverse proxy in front of the API would send."""
    page = _PROXY_PAGE.format(status=status, reason=reason)
    return Reply(status, page.encode(), "text/html")
