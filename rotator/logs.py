"""Logging: structlog configured once, JSON off a TTY, secrets redacted on the way out.

The redaction itself (``rotator.redaction``) runs as the last processor before rendering,
so exceptions are masked too. ``rotation_id`` and ``target`` are bound through context
vars by the runner.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, TextIO

import structlog

from rotator.redaction import redact_processor

__all__ = ["configure_logging"]


def configure_logging(fmt: Literal["auto", "json", "console"] = "auto", level: str = "info",
                      stream: TextIO | None = None) -> None:
    """Configure structlog once for the process (tests reset it with an autouse fixture)."""
    out = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = (structlog.processors.JSONRenderer() if use_json
                     else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_processor,   # last before rendering, so exceptions are masked too
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    # Libraries (APScheduler, urllib3) log through the standard library: send their
    # warnings through the same processors, so they are redacted and rendered alike.
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not isinstance(h, _ToStructlog)]
    root.addHandler(_ToStructlog())
    root.setLevel(max(logging.WARNING, logging.getLevelNamesMapping()[level.upper()]))


class _ToStructlog(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        logger = structlog.get_logger(record.name)
        method = getattr(logger, record.levelname.lower(), logger.warning)
        method(record.getMessage(), exc_info=record.exc_info or False)
