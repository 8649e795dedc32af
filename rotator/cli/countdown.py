"""What ``rotator rotate`` shows on a terminal while it waits out a grace window.

A grace window is long (hours, a day): a terminal that shows nothing for that long looks
hung, and an operator who presses Ctrl-C should know it is safe. One status line, rewritten
in place about once a second, says which target waits, until when, how long is left, and
the command that resumes. Piped output gets none of it (the progress lines say enough, and
``grace_waiting`` in the info log names the deadline).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TextIO

from rotator.core.durations import format_duration

__all__ = ["GraceCountdown"]

_CLEAR = "\r\x1b[K"   # to the line's start, then erase to its end


class GraceCountdown:
    """``on_wait`` for ``rotate_targets``: call it with the deadlines being waited out."""

    def __init__(self, stream: TextIO,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._stream, self._now = stream, now
        self._drawn = False

    def __call__(self, waiting: Mapping[str, datetime]) -> None:
        if not waiting:
            self.clear()
            return
        target, ends = min(waiting.items(), key=lambda item: item[1])
        left = max(0.0, (ends - self._now()).total_seconds())
        others = f" (and {len(waiting) - 1} more)" if len(waiting) > 1 else ""
        line = (f"{target}{others}: grace until {ends:%Y-%m-%d %H:%M:%S} UTC, "
                f"{format_duration(round(left))} left; Ctrl-C is safe, "
                f"`rotator rotate {target}` resumes")
        width = shutil.get_terminal_size().columns
        self._stream.write(_CLEAR + line[: max(width - 1, 20)])
        self._stream.flush()
        self._drawn = True

    def clear(self) -> None:
        """Take the line away (before other output, and at the end)."""
        if self._drawn:
            self._stream.write(_CLEAR)
            self._stream.flush()
            self._drawn = False
