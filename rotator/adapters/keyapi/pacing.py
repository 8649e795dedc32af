"""One rate-limit budget per bearer, shared by every thread of the process.

Count counts each key's requests in fixed windows and says on every answer how many are
left (``RateLimit-Remaining``), when the window resets (``RateLimit-Reset``) and its size
(``RateLimit-Limit``). Workers that each acted on their own answers alone would all send
into a spent window and collect a 429 apiece. Here they draw on one count: a request goes
while its window has one left; once the window is spent, each further request is booked
into a later window (``limit`` per window) and waits for it, so a batch spends every window
whole and does not storm the reset.

Between replicas nothing is shared but the server's own count, which each reads from its
answers: in the window where the count reaches 0, each replica may have requests in flight
that it counted as allowed (at most its worker count), and those few 429s are waited out
like any other (``Retry-After``). Replicas do not split the limit between them in advance;
they share whatever the server says is left.

Times are this process's monotonic clock. Reset times the server rounds up to whole
seconds make a window look a little longer than it is: safe, never early.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Pacer", "Turn"]

# Two resets this close (seconds) are one window seen by two answers (whole-second
# rounding, answers that crossed in flight).
_SAME_WINDOW = 1.5


@dataclass(slots=True)
class _Window:
    left: int              # requests that may still go before reset_at
    reset_at: float        # monotonic time the window ends
    limit: int | None      # requests per window, once the server said
    length: float | None   # seconds per window: the longest wait to a reset seen
    booked: int = 0        # requests waiting for a later window
    number: int = 0        # this window's place in the bearer's sequence of windows


@dataclass(frozen=True, slots=True)
class Turn:
    """A request's place: ``wait`` seconds from now, in window ``window`` of its bearer."""

    wait: float
    window: int | None = None   # None: not booked (the request may go when ``wait`` is up)


class Pacer:
    """Thread-safe. ``reserve`` before each request (and ``wait_more`` after waiting for
    its turn), ``observe`` each answer."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}

    def reserve(self, bearer: str) -> Turn:
        """The next request of ``bearer``: counted in its window, and when that begins.

        No wait while the window has a request left, or nothing is known of it. A caller
        that will not wait that long sends anyway and lets the server's 429 say so.
        """
        with self._lock:
            window = self._windows.get(bearer)
            if window is None:
                return Turn(0.0)
            now = self._monotonic()
            if not self._roll(bearer, window, now):
                return Turn(0.0)
            if window.left > 0:
                window.left -= 1
                return Turn(0.0, window.number)
            if window.limit is None or window.length is None:
                return Turn(window.reset_at - now)   # then everyone goes: nothing to book by
            later = window.booked // window.limit   # windows after the next one
            window.booked += 1
            return Turn(window.reset_at + later * window.length - now,
                        window.number + 1 + later)

    def wait_more(self, bearer: str, turn: Turn) -> float:
        """Seconds still to wait for ``turn``'s window, as now known (0: it has begun).

        A booked request asks again when its wait is up: answers since may have shown the
        windows opening later than reckoned (a window opens at the first request after
        the last one ended).
        """
        with self._lock:
            window = self._windows.get(bearer)
            if turn.window is None or window is None:
                return 0.0
            now = self._monotonic()
            if not self._roll(bearer, window, now) or window.number >= turn.window:
                return 0.0
            return max(0.0, window.reset_at + (turn.window - window.number - 1)
                       * (window.length or 0.0) - now)

    def observe(self, bearer: str, remaining: int | None, reset_in: float | None,
                limit: int | None = None) -> None:
        """What an answer said: ``remaining`` requests until ``reset_in`` seconds from now.

        A 429 is ``remaining=0`` until its Retry-After. Nothing is learnt from an answer
        that says neither.
        """
        if remaining is None or reset_in is None:
            return
        with self._lock:
            now = self._monotonic()
            reset_at = now + reset_in
            window = self._windows.get(bearer)
            if window is not None and not self._roll(bearer, window, now):
                window = None
            if window is not None and abs(reset_at - window.reset_at) <= _SAME_WINDOW:
                # The same window: the smaller count holds (ours includes requests the
                # server had not seen yet; its own, those of other replicas).
                window.left = min(window.left, remaining)
                window.reset_at = max(window.reset_at, reset_at)
                window.limit = limit if limit is not None else window.limit
                window.length = max(window.length or 0.0, reset_in)
                return
            if window is not None and reset_at < window.reset_at:
                return   # an answer from a window already over, arriving late
            # A later window than ours (or the first seen): the requests booked for the
            # next one go in it.
            booked = 0 if window is None else window.booked
            self._windows[bearer] = _Window(
                left=max(0, remaining - booked), reset_at=reset_at, limit=limit,
                length=max(reset_in, 0.0 if window is None else window.length or 0.0) or None,
                booked=max(0, booked - remaining),
                number=0 if window is None else window.number + 1)

    def _roll(self, bearer: str, window: _Window, now: float) -> bool:
        """Move ``window`` on to the one ``now`` falls in; ``False``: forgotten instead."""
        if now < window.reset_at:
            return True
        if window.limit is None or not window.length:
            del self._windows[bearer]    # past its reset, nothing known of the next
            return False
        periods = math.floor((now - window.reset_at) / window.length) + 1
        for _ in range(min(periods, window.booked // window.limit + 1)):
            taken = min(window.booked, window.limit)
            window.booked -= taken
            window.left = window.limit - taken
        if periods > window.booked // window.limit + 1:
            window.left = window.limit
        window.reset_at += periods * window.length
        window.number += periods
        return True
