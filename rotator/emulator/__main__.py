"""``python -m rotator.emulator``: the same as ``rotator emulator``."""

from __future__ import annotations

from rotator.emulator.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    raise SystemExit(main())
