"""Retry policy as data, and the one loop that applies it.

Only ``TransientError`` is retried. The delay grows exponentially with full jitter,
capped, and a server's own word (``RateLimited.retry_after``, from Retry-After or
RateLimit-Reset) takes precedence when it asks for longer. A call is bounded both in
attempts and in elapsed time, so a step can never retry forever.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from rotator.core.errors import RateLimited, TransientError

__all__ = ["RetryPolicy", "call_with_retry"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay: float = 0.2       # seconds before the second attempt (before jitter)
    max_delay: float = 10.0       # cap on any one computed delay
    max_elapsed: float = 60.0     # give up once this much time has passed
    max_retry_after: float = 120.0  # refuse to wait longer than this for a server's ask

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(self.base_delay, self.max_delay, self.max_elapsed) < 0:
            raise ValueError("delays must not be negative")

    def delay(self, attempt: int, retry_after: float | None,
              rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * (2.0 ** (attempt - 1)))
        jittered = ceiling * rng()
        if retry_after is not None:
            return max(jittered, min(retry_after, self.max_retry_after))
        return jittered


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    on_retry: Callable[[int, TransientError, float], None] | None = None,
) -> T:
    """Call ``fn`` until it succeeds, fails permanently, or the policy's budget is spent.

    The last ``TransientError`` is re-raised when the budget runs out.
    """
    started = monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except TransientError as exc:
            retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
            wait = policy.delay(attempt, retry_after)
            elapsed = monotonic() - started
            if attempt >= policy.max_attempts or elapsed + wait > policy.max_elapsed:
                exc.with_context(attempts=attempt)
                raise
            if on_retry is not None:
                on_retry(attempt, exc, wait)
            sleep(wait)
