"""The daemon's scheduling: pure due-time maths and the wake-up loop."""

from __future__ import annotations

__all__: list[str] = []
