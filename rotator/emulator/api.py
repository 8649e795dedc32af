"""The Count API as the emulator serves it: the fault pipeline and the ``/v1`` routes.

``CountApi.handle`` takes a ``Request`` and returns a ``Reply``, with no sockets
involved. Per request, in this order: latency, a random 5xx, a random 429, the
fixed-window rate limiter, then the real handling. RateLimit-* headers go on every
reply while a limit is set. ``CountApi.settings`` may be replaced at any time; doing
so reseeds the fault RNG.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

from rotator.emulator import alt
from rotator.emulator.envelope import (
    ApiError,
    Reply,
    Request,
    failure,
    failure_from,
    html_error,
    success,
)
from rotator.emulator.faults import (
    EmulatorSettings,
    FaultInjector,
    FaultKind,
    rate_headers,
    retry_after,
)
from rotator.emulator.state import ApiKey, EmulatorState, rfc3339

__all__ = ["CountApi"]

_ACCOUNTS = re.compile(r"/v1/service-accounts")
_KEYS = re.compile(r"/v1/service-accounts/(?P<sa>[^/]+)/api-keys")
_KEY = re.compile(r"/v1/service-accounts/(?P<sa>[^/]+)/api-keys/(?P<key_id>[^/]+)")
_WHOAMI = re.compile(r"/v1/whoami")

_JSON_5XX = {500: ("internal_error", "internal server error (injected)"),
             503: ("service_unavailable", "service temporarily unavailable (injected)")}


class CountApi:
    """The ``/v1`` endpoints over an ``EmulatorState``, with faults injected."""

    def __init__(self, state: EmulatorState, settings: EmulatorSettings, *,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], object] = time.sleep) -> None:
        if not isinstance(settings, EmulatorSettings):
            raise TypeError(f"settings must be EmulatorSettings, not {type(settings).__name__}")
        self.state = state
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._settings = settings
        self.injector = FaultInjector(settings.seed, clock=clock)

    @property
    def settings(self) -> EmulatorSettings:
        with self._lock:
            return self._settings

    @settings.setter
    def settings(self, value: EmulatorSettings) -> None:
        if not isinstance(value, EmulatorSettings):
            raise TypeError(f"settings must be EmulatorSettings, not {type(value).__name__}")
        with self._lock:
            self._settings = value
            self.injector.reseed(value.seed)

    def handle(self, request: Request) -> Reply:
        settings = self.settings
        if settings.layout == "alt":
            meant = alt.inbound(request)
            if isinstance(meant, Reply):
                self.state.record_request()
                return meant
            count_request, op = meant
            return alt.outbound(self._handle(settings, count_request), op)
        return self._handle(settings, request)

    def _handle(self, settings: EmulatorSettings, request: Request) -> Reply:
        self.state.record_request()
        if settings.latency > 0:
            self._sleep(settings.latency)
        client = request.bearer or ""
        fault = self._inject(settings, client)
        if fault is not None:
            return fault
        allowed, window = self.injector.hit(settings, client)
        now = self._clock()
        headers = rate_headers(settings.reset_format, window, now)
        if not allowed:
            assert window is not None
            self.state.record_fault(FaultKind.RATE_LIMITED)
            wait = retry_after(settings.reset_format, window.reset_at, now)
            return failure(429, "rate_limited", "rate limit exceeded; retry later",
                           {**headers, "Retry-After": wait})
        try:
            reply = self._route(settings, request)
        except ApiError as error:
            reply = failure_from(error)
        return reply.with_headers(headers)

    def _inject(self, settings: EmulatorSettings, client: str) -> Reply | None:
        status = self.injector.roll_5xx(settings)
        now = self._clock()
        headers = rate_headers(settings.reset_format, self.injector.peek(settings, client), now)
        if status == 502:
            self.state.record_fault(FaultKind.ERROR_HTML)
            return html_error(502, "Bad Gateway").with_headers(headers)
        if status is not None:
            self.state.record_fault(FaultKind.ERROR_JSON)
            code, message = _JSON_5XX[status]
            return failure(status, code, message, headers)
        if self.injector.roll_429(settings):
            self.state.record_fault(FaultKind.RATE_429)
            wait = retry_after(settings.reset_format, now + settings.rate_window, now)
            return failure(429, "rate_limited", "too many requests (injected)",
                           {**headers, "Retry-After": wait})
        return None

    # --- routes -----------------------------------------------------------------------

    def _route(self, settings: EmulatorSettings, request: Request) -> Reply:
        path, method = request.path, request.method
        if _WHOAMI.fullmatch(path):
            _allow(method, "GET")
            caller = self._caller(settings, request)
            return success({"service_account_id": caller.account_id,
                            "key_id": caller.key_id})
        if _ACCOUNTS.fullmatch(path):
            _allow(method, "GET")
            caller = self._caller(settings, request)
            accounts = self.state.visible_accounts(caller)
            return success({"service_accounts": [
                {"id": a.id, "name": a.name, "role": a.role} for a in accounts]})
        if match := _KEYS.fullmatch(path):
            _allow(method, "GET", "POST")
            caller = self._caller(settings, request)
            account = self.state.authorize(caller, match["sa"])
            if method == "GET":
                keys = self.state.keys(account.id)
                return success({"api_keys": [k.listing() for k in keys]})
            name = request.json_object().get("name")
            key = self.state.create_key(account.id, name, key_limit=settings.key_limit,
                                        propagation_delay=settings.propagation_delay)
            return success({"key_id": key.key_id, "name": key.name, "api_key": key.secret,
                            "created_at": rfc3339(key.created_at)}, status=201)
        if match := _KEY.fullmatch(path):
            _allow(method, "DELETE")
            caller = self._caller(settings, request)
            account = self.state.authorize(caller, match["sa"])
            key = self.state.delete_key(account.id, match["key_id"])
            return success({"key_id": key.key_id, "deleted": True})
        raise ApiError(404, "not_found", "no such endpoint")

    def _caller(self, settings: EmulatorSettings, request: Request) -> ApiKey:
        if request.bearer is None:
            raise ApiError(401, "unauthorized", "missing bearer token")
        caller = self.state.authenticate(request.bearer, revoke_delay=settings.revoke_delay)
        if caller is None:
            raise ApiError(401, "unauthorized", "invalid API key")
        return caller


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise ApiError(405, "method_not_allowed", f"use {' or '.join(allowed)}")
