"""Developer tools: ``rotator demo`` and the throwaway OpenBao dev server it and the tests use."""

from __future__ import annotations

__all__: list[str] = []
