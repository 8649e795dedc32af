"""Durations as people write them in config and on the command line: ``90s``, ``1h30m``."""

from __future__ import annotations

import math
import re

__all__ = ["format_duration", "parse_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+$")
# Longer than any interval a rotation needs, and far from where datetime arithmetic
# overflows (``now + timedelta`` past the year 9999); nan and inf are refused too.
_MAX_SECONDS = 100 * 365 * 86400.0


def parse_duration(value: object) -> float:
    """Seconds from ``"1h30m"``, ``"500ms"``, ``"30d"`` or a plain number of seconds.

    Raises ``ValueError`` with a message fit for a config error.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration like '30s', '5m', '24h' or '30d'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if text.startswith("-"):
            raise ValueError(f"duration must not be negative, got {value!r}")
        if not _WHOLE.match(text):
            raise ValueError(
                f"invalid duration {value!r}: expected e.g. '30s', '5m', '24h', '30d', '1h30m'"
            )
        seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
    else:
        raise ValueError("expected a duration like '30s', '5m', '24h' or '30d'")
    if seconds < 0:
        raise ValueError(f"duration must not be negative, got {value!r}")
    if not math.isfinite(seconds) or seconds > _MAX_SECONDS:
        raise ValueError(f"duration must be finite and at most 100 years, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """A short human form: ``3d4h``, ``12m5s``, ``0s``."""
    whole = int(seconds)
    if whole <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts[:2])
