"""Logging: structlog configured once, JSON off a TTY, and secrets redacted on the way out.

Redaction is belt and braces: values under secret-sounding keys are masked, strings
that look like keys or tokens are masked, and every secret the process has handled
(registered through ``remember_secret``) is masked wherever it appears, whatever its
shape. ``rotation_id`` and ``target`` are bound through context vars by the runner.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import structlog

from rotator.core.secret import Secret

__all__ = ["REDACTED", "configure_logging", "redact_processor", "redact_text",
           "remember_secret"]

REDACTED = "[REDACTED]"

_SECRET_KEYS = re.compile(r"(secret|token|password|api_key|apikey|authorization|credential)",
                          re.IGNORECASE)
_SECRET_SHAPES = re.compile(
    r"(?:\bBearer\s+\S+)"                       # an Authorization header value
    r"|(?:\bcnt_[A-Za-z0-9]{16,})"              # Count API keys
    r"|(?:\b(?:hvs|hvb|hvr|s|b)\.[A-Za-z0-9_-]{20,})"  # Vault / OpenBao tokens
)

_known: set[str] = set()
_known_lock = threading.Lock()


def remember_secret(secret: Secret | str) -> None:
    """Mask this value in every later log line, whatever it looks like."""
    value = secret.reveal() if isinstance(secret, Secret) else secret
    if len(value) >= 6:
        with _known_lock:
            _known.add(value)


def redact_text(text: str) -> str:
    with _known_lock:
        known = sorted(_known, key=len, reverse=True)
    for value in known:
        if value in text:
            text = text.replace(value, REDACTED)
    return _SECRET_SHAPES.sub(REDACTED, text)


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Secret):
        return REDACTED
    if isinstance(value, dict):
        return {k: (REDACTED if _is_secret_key(k) else _redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return redact_text(str(value))


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and bool(_SECRET_KEYS.search(key)) and not key.endswith(
        ("_env", "_file", "_id", "_fingerprint", "fingerprint"))


def redact_processor(_logger: Any, _method: str,
                     event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask secrets in every value (exceptions included)."""
    for key in list(event_dict):
        value = event_dict[key]
        event_dict[key] = REDACTED if _is_secret_key(key) else _redact(value)
    return event_dict


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
