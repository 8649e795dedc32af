"""The emulator's control endpoints under ``/_emulator/``, for tests and standalone use.

    GET  /_emulator/state      accounts, keys (ids, names, times; no secrets), counters,
                               settings
    POST /_emulator/faults     JSON object replacing any subset of the settings
    POST /_emulator/accounts   {"name", "role"}: seed an account with one key; answers
                               with that key's secret (this is a fake provider)

They need the emulator's control token in the header ``TOKEN_HEADER`` (401 without it,
403 with another one): whoever reaches the port can call the fake API, but not reconfigure
it or mint accounts. They see no faults and are not counted as API requests.
"""

from __future__ import annotations

import hmac

from rotator.emulator.api import CountApi
from rotator.emulator.envelope import ApiError, Reply, Request, failure_from, success

__all__ = ["PREFIX", "TOKEN_HEADER", "handle_control"]

PREFIX = "/_emulator/"
TOKEN_HEADER = "X-Emulator-Token"  # noqa: S105 (a header name, not a token)


def handle_control(api: CountApi, request: Request, *, token: str,
                   presented: str | None) -> Reply:
    """Answer a request whose path starts with ``PREFIX``, if ``presented`` is ``token``."""
    try:
        _authorize(token, presented)
        return _route(api, request)
    except ApiError as error:
        return failure_from(error)


def _authorize(token: str, presented: str | None) -> None:
    if not presented:
        raise ApiError(401, "unauthorized", f"the control endpoints need the {TOKEN_HEADER} "
                       "header (the token `rotator emulator` prints at start)")
    if not hmac.compare_digest(presented.encode(), token.encode()):
        raise ApiError(403, "forbidden", f"wrong {TOKEN_HEADER}")


def _route(api: CountApi, request: Request) -> Reply:
    endpoint = (request.method, request.path.removeprefix(PREFIX).rstrip("/"))
    if endpoint == ("GET", "state"):
        return success({**api.state.snapshot(), "settings": api.settings.as_dict()})
    if endpoint == ("POST", "faults"):
        changes = request.json_object()
        try:
            api.settings = api.settings.changed(changes)
        except (ValueError, TypeError) as exc:
            raise ApiError(400, "invalid_request", str(exc)) from exc
        return success({"settings": api.settings.as_dict()})
    if endpoint == ("POST", "accounts"):
        body = request.json_object()
        name, role = body.get("name"), body.get("role", "member")
        if not isinstance(name, str) or not isinstance(role, str):
            raise ApiError(400, "invalid_request", "name and role must be strings")
        try:
            account, key = api.state.add_account(name, role)
        except ValueError as exc:
            raise ApiError(400, "invalid_request", str(exc)) from exc
        return success({"account_id": account.id, "name": account.name,
                        "role": account.role, "key_id": key.key_id,
                        "api_key": key.secret}, status=201)
    raise ApiError(404, "not_found", "no such control endpoint")
