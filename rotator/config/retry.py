"""The retry policy: one frozen definition, read from ``[*.retry]`` and applied by the adapters.

``rotator.adapters.retry.call_with_retry`` runs the loop; this module owns the numbers
and the delay they give. The delay grows exponentially with full jitter, capped, and a
server's own word (Retry-After or RateLimit-Reset) wins when it asks for longer, up to
``max_retry_after``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from pydantic import Field

from rotator.config.base import Duration, Frozen

__all__ = ["RetryPolicy"]


class RetryPolicy(Frozen):
    max_attempts: int = Field(default=5, ge=1, le=100)
    base_delay: Duration = 0.2       # seconds before the second attempt (before jitter)
    max_delay: Duration = 10.0       # cap on any one computed delay
    max_elapsed: Duration = 60.0     # give up once this much time has passed
    max_retry_after: Duration = 120.0  # refuse to wait longer than this for a server's ask

    def delay(self, attempt: int, retry_after: float | None,
              rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * (2.0 ** (attempt - 1)))
        jittered = ceiling * rng()
        if retry_after is not None:
            return max(jittered, min(retry_after, self.max_retry_after))
        return jittered
