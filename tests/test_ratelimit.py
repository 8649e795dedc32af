"""Unit tests of rotator.adapters.keyapi.ratelimit: header arithmetic, no IO."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.adapters.keyapi import ratelimit
from rotator.adapters.keyapi.ratelimit import (
    EPOCH_THRESHOLD,
    RateLimitState,
    parse_ratelimit_reset,
    parse_retry_after,
)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
GARBAGE = ["", "   ", "soon", "-5", "+5", "nan", "inf", "1e3", "1_000", "0x10", "5 s",
           "Wed, 99 Foo 2024 07:28:00 GMT", "Mon, 01 Jan 99999 00:00:00 GMT", "x" * 500,
           "1" * 40]


def test_public_api() -> None:
    assert set(ratelimit.__all__) == {
        "EPOCH_THRESHOLD", "RateLimitState", "parse_ratelimit_reset", "parse_retry_after"}


# --- Retry-After ------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("120", 120.0), (" 3 ", 3.0), ("0", 0.0), ("1.5", 1.5),
])
def test_retry_after_delta_seconds(value: str, expected: float) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_retry_after_http_date_in_the_future() -> None:
    assert parse_retry_after("Wed, 01 May 2024 12:00:30 GMT", NOW) == 30.0


def test_retry_after_http_date_in_the_past_is_zero() -> None:
    assert parse_retry_after("Wed, 01 May 2024 11:00:00 GMT", NOW) == 0.0


def test_retry_after_in_epoch_seconds_is_the_time_until_then() -> None:
    assert parse_retry_after(str(int(NOW.timestamp()) + 30), NOW) == 30.0
    assert parse_retry_after(str(int(NOW.timestamp()) - 30), NOW) == 0.0
    assert parse_retry_after(str(EPOCH_THRESHOLD), NOW) == EPOCH_THRESHOLD   # a delta still


def test_retry_after_naive_now_is_utc() -> None:
    naive = NOW.replace(tzinfo=None)
    assert parse_retry_after("Wed, 01 May 2024 12:00:10 GMT", naive) == 10.0


@pytest.mark.parametrize("value", [None, *GARBAGE])
def test_retry_after_garbage_is_none(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


# --- RateLimit-Reset ----------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("30", 30.0), ("0", 0.0), ("2.5", 2.5), ("10, 10;w=1", 10.0), ("7;w=60", 7.0),
    (str(EPOCH_THRESHOLD), float(EPOCH_THRESHOLD)),   # not above the threshold: a delta
])
def test_reset_delta_seconds(value: str, expected: float) -> None:
    assert parse_ratelimit_reset(value, NOW) == expected


def test_reset_epoch_seconds() -> None:
    assert parse_ratelimit_reset(str(int(NOW.timestamp()) + 45), NOW) == 45.0


def test_reset_epoch_in_the_past_is_zero() -> None:
    assert parse_ratelimit_reset(str(int(NOW.timestamp()) - 45), NOW) == 0.0


@pytest.mark.parametrize("value", [None, *GARBAGE[:11], "Wed, 01 May 2024 12:00:30 GMT"])
def test_reset_garbage_is_none(value: str | None) -> None:
    assert parse_ratelimit_reset(value, NOW) is None


# --- RateLimitState -------------------------------------------------------------------------

def test_state_from_headers_is_case_insensitive() -> None:
    state = RateLimitState.from_headers(
        {"ratelimit-LIMIT": "100", "RATELIMIT-remaining": "0", "RateLimit-Reset": "12"}, NOW)
    assert state == RateLimitState(remaining=0, reset_in=12.0, limit=100)
    assert state.exhausted


def test_state_from_httpx_headers() -> None:
    headers = httpx.Headers({"RateLimit-Limit": "10, 10;w=1", "RateLimit-Remaining": "3"})
    state = RateLimitState.from_headers(headers, NOW)
    assert state == RateLimitState(remaining=3, reset_in=None, limit=10)
    assert not state.exhausted


def test_state_missing_or_garbage_headers_are_none() -> None:
    assert RateLimitState.from_headers({}, NOW) == RateLimitState()
    garbage = {"RateLimit-Limit": "lots", "RateLimit-Remaining": "-1", "RateLimit-Reset": "?"}
    state = RateLimitState.from_headers(garbage, NOW)
    assert state == RateLimitState()
    assert not state.exhausted


def test_state_is_frozen() -> None:
    state = RateLimitState(remaining=1)
    with pytest.raises(AttributeError):
        state.remaining = 2  # type: ignore[misc]


# --- properties -----------------------------------------------------------------------------

moments = st.datetimes(min_value=datetime(2002, 1, 1), max_value=datetime(2100, 1, 1),
                       timezones=st.just(UTC))


@given(st.integers(min_value=0, max_value=10**8), moments)
def test_retry_after_delta_round_trip(seconds: int, now: datetime) -> None:
    assert parse_retry_after(str(seconds), now) == seconds


@given(st.integers(min_value=0, max_value=10**7), moments)
def test_retry_after_http_date_round_trip(seconds: int, now: datetime) -> None:
    header = format_datetime(now + timedelta(seconds=seconds), usegmt=True)
    parsed = parse_retry_after(header, now)
    assert parsed is not None
    assert seconds - 1 < parsed <= seconds    # an HTTP date drops sub-second precision


@given(st.integers(min_value=0, max_value=10**7), moments)
def test_reset_epoch_round_trip(seconds: int, now: datetime) -> None:
    epoch = math.ceil(now.timestamp()) + seconds
    parsed = parse_ratelimit_reset(str(epoch), now)
    assert parsed is not None
    assert seconds <= parsed < seconds + 1


@given(st.integers(min_value=0, max_value=EPOCH_THRESHOLD), moments)
def test_reset_delta_round_trip(seconds: int, now: datetime) -> None:
    assert parse_ratelimit_reset(str(seconds), now) == seconds


@given(st.one_of(st.none(), st.text(max_size=80)), moments)
def test_parsers_are_total_and_never_negative(value: str | None, now: datetime) -> None:
    for parser in (parse_retry_after, parse_ratelimit_reset):
        result = parser(value, now)
        assert result is None or (math.isfinite(result) and result >= 0)


@settings(max_examples=50)
@given(
    st.one_of(st.none(), st.integers(min_value=0, max_value=10**6)),
    st.one_of(st.none(), st.integers(min_value=0, max_value=10**6)),
    st.one_of(st.none(), st.integers(min_value=0, max_value=10**6)),
    st.randoms(use_true_random=False),
)
def test_state_round_trip(limit: int | None, remaining: int | None, reset: int | None,
                          rng: random.Random) -> None:
    def mangle(name: str) -> str:
        return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in name)

    headers = {mangle(name): str(value) for name, value in [
        ("RateLimit-Limit", limit), ("RateLimit-Remaining", remaining),
        ("RateLimit-Reset", reset)] if value is not None}
    state = RateLimitState.from_headers(headers, NOW)
    assert state == RateLimitState(remaining=remaining,
                                   reset_in=None if reset is None else float(reset),
                                   limit=limit)
    assert state.exhausted == (remaining == 0)
