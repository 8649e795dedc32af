"""The secret registry and the redaction that masks secrets on their way out.

Belt and braces: values under secret-sounding keys are masked, strings that look like keys
or tokens are masked, and every secret the process has handled (registered through
``remember_secret`` at the adapter boundary where it entered) is masked wherever it
appears, whatever its shape. ``logs`` puts ``redact_processor`` last before rendering;
the CLI passes every error message through ``redact_text``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import MutableMapping
from typing import Any

from rotator.core.secret import Secret

__all__ = ["REDACTED", "redact_processor", "redact_text", "remember_secret"]

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
