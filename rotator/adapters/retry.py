"""The one loop that applies a retry policy (``rotator.config.retry.RetryPolicy``).

Only ``TransientError`` is retried. The policy gives each delay: exponential with full
jitter, capped, and a server's own word (``RateLimited.retry_after``, from Retry-After or
RateLimit-Reset) takes precedence when it asks for longer. A call is bounded both in
attempts and in elapsed time, so a step can never retry forever.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from rotator.config.retry import RetryPolicy
from rotator.core.errors import RateLimited, TransientError

__all__ = ["call_with_retry"]

T = TypeVar("T")


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
