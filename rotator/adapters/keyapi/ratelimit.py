"""Rate-limit header arithmetic for HTTP key providers: pure functions, no IO.

Count (docs/count-api.md) sends ``RateLimit-Limit``, ``RateLimit-Remaining`` and
``RateLimit-Reset`` on every response, and ``Retry-After`` on a 429. ``Retry-After`` is
delta-seconds or an HTTP date, and some servers send epoch seconds there too;
``RateLimit-Reset`` is delta-seconds or epoch seconds. A number above ``EPOCH_THRESHOLD``
is epoch seconds in either. Another provider's names for the three are given to
``RateLimitState.from_headers``. Everything here turns those into "seconds from
now", never negative, and turns garbage into ``None`` instead of an exception: a
malformed header must never fail a call that otherwise worked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = [
    "EPOCH_THRESHOLD",
    "RateLimitState",
    "parse_ratelimit_reset",
    "parse_retry_after",
]

# A Retry-After or RateLimit-Reset above this (2001-09-09 in epoch seconds; 31 years as a
# delta) is an absolute epoch time, not a delta.
EPOCH_THRESHOLD = 10**9

# Plain non-negative decimals only: float() would also take "nan", "inf", "1e9", "1_0".
_DECIMAL = re.compile(r"[0-9]{1,20}(?:\.[0-9]{1,9})?")
_INTEGER = re.compile(r"[0-9]{1,18}")
_MAX_DATE_LENGTH = 64


def _aware(moment: datetime) -> datetime:
    """A naive datetime is taken to be UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _decimal(value: str | None) -> float | None:
    if value is None:
        return None
    text = value.strip()
    return float(text) if _DECIMAL.fullmatch(text) else None


def _http_date(text: str) -> datetime | None:
    if len(text) > _MAX_DATE_LENGTH:
        return None
    try:
        return _aware(parsedate_to_datetime(text))
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait according to a ``Retry-After`` value, or ``None`` if unusable.

    Accepts delta-seconds (``"120"``, leniently ``"1.5"``), an HTTP date
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``) or epoch seconds (above ``EPOCH_THRESHOLD``:
    read as a delta, it asked for 56 years and the call gave up at its first 429); a time
    in the past means 0.
    """
    number = _decimal(value)
    if number is not None:
        return _from_now(number, now)
    if value is None:
        return None
    when = _http_date(value.strip())
    if when is None:
        return None
    return max(0.0, (when - _aware(now)).total_seconds())


def parse_ratelimit_reset(value: str | None, now: datetime) -> float | None:
    """Seconds until the window resets according to ``RateLimit-Reset``, or ``None``.

    Delta-seconds, or epoch seconds when above ``EPOCH_THRESHOLD``; a past epoch means 0.
    Only the first item of a list (``"30, 30;w=60"``) is read.
    """
    number = _decimal(_first_item(value))
    return None if number is None else _from_now(number, now)


def _from_now(number: float, now: datetime) -> float:
    """Seconds from ``now``: ``number`` itself, or until it, if it is an epoch time."""
    if number > EPOCH_THRESHOLD:
        return max(0.0, number - _aware(now).timestamp())
    return number


def _first_item(value: str | None) -> str | None:
    """``"10, 10;w=1"`` -> ``"10"``: the first list member without parameters."""
    if value is None:
        return None
    return value.split(",", 1)[0].split(";", 1)[0]


def _integer(value: str | None) -> int | None:
    item = _first_item(value)
    if item is None:
        return None
    text = item.strip()
    return int(text) if _INTEGER.fullmatch(text) else None


@dataclass(frozen=True, slots=True)
class RateLimitState:
    """What one response said about its bearer's rate-limit window.

    Each field is ``None`` when its header was absent or malformed.
    """

    remaining: int | None = None
    reset_in: float | None = None  # seconds from the response until the window resets
    limit: int | None = None       # requests per window

    @property
    def exhausted(self) -> bool:
        """No request is left in this window."""
        return self.remaining == 0

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], now: datetime, *,
                     remaining: str = "RateLimit-Remaining", reset: str = "RateLimit-Reset",
                     limit: str = "RateLimit-Limit") -> RateLimitState:
        """Read the remaining, reset and limit headers (by default ``RateLimit-*``; names
        are case-insensitive)."""
        lowered = {name.lower(): value for name, value in headers.items()}
        return cls(
            remaining=_integer(lowered.get(remaining.lower())),
            reset_in=parse_ratelimit_reset(lowered.get(reset.lower()), now),
            limit=_integer(lowered.get(limit.lower())),
        )
