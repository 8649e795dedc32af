"""The real clock. Tests pass their own ``Clock`` instead."""

from __future__ import annotations

import time
from datetime import UTC, datetime

__all__ = ["SYSTEM_CLOCK", "SystemClock"]


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


# Stateless, so one instance serves as every adapter's default clock.
SYSTEM_CLOCK = SystemClock()
