"""The emulator's fault knobs and the machinery that applies them.

``EmulatorSettings`` is the frozen, validated set of knobs (key limit, latency, random
5xx and 429, a fixed-window rate limit, the format of reset times, propagation delay,
how long a deleted key goes on authenticating, the RNG seed). ``FaultInjector`` rolls
the random faults and keeps the per-key fixed windows of the rate limiter;
``rate_headers`` and ``retry_after`` format what a client sees. Nothing here knows
about HTTP servers or the key model.

Reset formats (``reset_format``):

    format      Retry-After            RateLimit-Reset
    delta       seconds from now       seconds from now
    epoch       epoch seconds          epoch seconds
    http-date   HTTP date (IMF-fixdate) epoch seconds

A random 429 asks the client to wait ``rate_window`` seconds; a 429 from the limiter,
until the client's window ends. Both round up to whole seconds.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from email.utils import formatdate
from enum import StrEnum
from typing import Any, Literal, get_args

__all__ = [
    "LAYOUTS",
    "EmulatorSettings",
    "FaultInjector",
    "FaultKind",
    "Layout",
    "RateStatus",
    "ResetFormat",
    "rate_headers",
    "retry_after",
]

ResetFormat = Literal["delta", "epoch", "http-date"]
RESET_FORMATS: tuple[str, ...] = get_args(ResetFormat)
# "alt": the same semantics under other paths, field names, envelope and auth header
# (``rotator.emulator.alt``), for the generic HTTP provider to be proven against.
Layout = Literal["count", "alt"]
LAYOUTS: tuple[str, ...] = get_args(Layout)

_RATES = ("error_rate", "rate_429")
_DURATIONS = ("latency", "propagation_delay", "revoke_delay")
_INTS = ("key_limit", "rate_limit")


@dataclass(frozen=True, slots=True)
class EmulatorSettings:
    """The knobs. Replace the whole object to change them at runtime."""

    key_limit: int = 2              # keys a service account may hold
    latency: float = 0.0            # seconds added to every API request
    error_rate: float = 0.0         # fraction of API requests answered 5xx
    rate_429: float = 0.0           # fraction of API requests answered 429 at random
    rate_limit: int = 0             # requests per window per API key; 0 = unlimited
    rate_window: float = 1.0        # the fixed window, seconds; a random 429's Retry-After
    reset_format: ResetFormat = "delta"
    propagation_delay: float = 0.0  # a new key answers 401 until created_at + this
    revoke_delay: float = 0.0       # a deleted key authenticates until deleted_at + this;
                                    # a large one is a provider that does not revoke
    seed: int | None = None         # seed of the fault RNG; None = unpredictable
    layout: Layout = "count"        # the wire layout the API is served in

    def __post_init__(self) -> None:
        for name in _INTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, not {value!r}")
            if value < 0:
                raise ValueError(f"{name} must not be negative, not {value}")
        for name in (*_RATES, *_DURATIONS, "rate_window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number, not {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite, non-negative number, not {value}")
        for name in _RATES:
            if getattr(self, name) > 1:
                raise ValueError(f"{name} must be between 0 and 1, not {getattr(self, name)}")
        if self.rate_window <= 0:
            raise ValueError(f"rate_window must be positive, not {self.rate_window}")
        if self.reset_format not in RESET_FORMATS:
            raise ValueError(
                f"reset_format must be one of {', '.join(RESET_FORMATS)}, "
                f"not {self.reset_format!r}"
            )
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, "
                             f"not {self.layout!r}")
        if self.seed is not None and (isinstance(self.seed, bool)
                                      or not isinstance(self.seed, int)):
            raise ValueError(f"seed must be an integer or null, not {self.seed!r}")

    def changed(self, changes: Mapping[str, Any]) -> EmulatorSettings:
        """A copy with ``changes`` applied; unknown names and bad values raise ValueError."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(unknown)}")
        # Integers are fine where floats are expected (JSON has one number type).
        coerced: dict[str, Any] = {
            name: float(value)
            if name in (*_RATES, *_DURATIONS, "rate_window")
            and isinstance(value, int) and not isinstance(value, bool)
            else value
            for name, value in changes.items()
        }
        return replace(self, **coerced)

    def as_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready mapping."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class FaultKind(StrEnum):
    """What the injector did to a request; the state counts these."""

    ERROR_HTML = "error_html"        # 502 with a proxy's HTML page
    ERROR_JSON = "error_json"        # 500 or 503 with a JSON error envelope
    RATE_429 = "rate_429"            # a random 429
    RATE_LIMITED = "rate_limited"    # the fixed-window limiter said no


@dataclass(frozen=True, slots=True)
class RateStatus:
    """Where a client stands in its current window."""

    limit: int
    remaining: int
    reset_at: float  # epoch seconds when the window ends


class FaultInjector:
    """Random faults (seeded) and the per-key fixed windows. Thread-safe."""

    def __init__(self, seed: int | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)  # noqa: S311 - fault injection, not cryptography
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}  # client -> (start, count)

    def reseed(self, seed: int | None) -> None:
        """Restart the random sequence (from entropy when ``seed`` is None)."""
        with self._lock:
            self._rng.seed(seed)

    def roll_5xx(self, settings: EmulatorSettings) -> int | None:
        """502 (HTML), 500 or 503 (JSON) for ``error_rate`` of requests, else None."""
        with self._lock:
            if settings.error_rate <= 0 or self._rng.random() >= settings.error_rate:
                return None
            if self._rng.random() < 0.5:
                return 502
            return self._rng.choice((500, 503))

    def roll_429(self, settings: EmulatorSettings) -> bool:
        with self._lock:
            return settings.rate_429 > 0 and self._rng.random() < settings.rate_429

    def peek(self, settings: EmulatorSettings, client: str) -> RateStatus | None:
        """The client's window without counting a request; None when unlimited."""
        if settings.rate_limit <= 0:
            return None
        with self._lock:
            start, count = self._current(settings, _client_key(client), self._clock())
        return RateStatus(settings.rate_limit, max(0, settings.rate_limit - count),
                          start + settings.rate_window)

    def hit(self, settings: EmulatorSettings, client: str) -> tuple[bool, RateStatus | None]:
        """Count one request; ``(allowed, status)``. Always allowed when unlimited."""
        if settings.rate_limit <= 0:
            return True, None
        key = _client_key(client)
        with self._lock:
            now = self._clock()
            start, count = self._current(settings, key, now)
            count += 1
            self._windows[key] = (start, count)
            if len(self._windows) > 10_000:
                self._prune(settings, now)
        status = RateStatus(settings.rate_limit, max(0, settings.rate_limit - count),
                            start + settings.rate_window)
        return count <= settings.rate_limit, status

    def _current(self, settings: EmulatorSettings, key: str, now: float) -> tuple[float, int]:
        # A window opens at a client's first request and lasts rate_window seconds.
        start, count = self._windows.get(key, (now, 0))
        if now >= start + settings.rate_window:
            return now, 0
        return start, count

    def _prune(self, settings: EmulatorSettings, now: float) -> None:
        expired = [k for k, (start, _) in self._windows.items()
                   if now >= start + settings.rate_window]
        for key in expired:
            del self._windows[key]


def _client_key(client: str) -> str:
    # Windows are kept per bearer; hash it so the limiter never holds a secret.
    return hashlib.sha256(client.encode()).hexdigest()


def retry_after(fmt: ResetFormat, reset_at: float, now: float) -> str:
    """The Retry-After value for a wait until ``reset_at`` (epoch seconds)."""
    if fmt == "epoch":
        return str(math.ceil(reset_at))
    if fmt == "http-date":
        return formatdate(math.ceil(reset_at), usegmt=True)
    return str(max(0, math.ceil(reset_at - now)))


def rate_headers(fmt: ResetFormat, status: RateStatus | None, now: float) -> dict[str, str]:
    """RateLimit-Limit, -Remaining and -Reset; empty when there is no limit."""
    if status is None:
        return {}
    if fmt == "delta":
        reset = str(max(0, math.ceil(status.reset_at - now)))
    else:
        reset = str(math.ceil(status.reset_at))
    return {
        "RateLimit-Limit": str(status.limit),
        "RateLimit-Remaining": str(status.remaining),
        "RateLimit-Reset": reset,
    }
