"""The secret registry and the redaction that masks secrets on their way out.

Belt and braces: values under secret-sounding keys are masked, strings that look like keys,
tokens, JWTs or URL passwords are masked, and every live secret the process handles
(registered through ``remember_secret`` at the adapter boundary where it entered) is masked
wherever it appears, whatever its shape. ``logs`` puts ``redact_processor`` last before
rendering; the CLI passes every error message through ``redact_text``.

The registry is bounded. A provider key is registered with its key id and dropped by
``forget_key`` once the provider confirms it deleted (revoked) it: a dead key needs no
masking, and every log line is scanned against every entry. Past ``MAX_KEYS`` keys the
oldest is evicted (it is still masked if it has a key's shape). Credentials (the Vault
token, a login's token, the AppRole secret id, management keys) are ``pinned``: kept apart,
so a busy daemon's turnover of keys never evicts them; ``MAX_PINNED`` bounds those too.

Key names: a key whose name holds ``secret``, ``token``, ``password``, ``api_key``,
``authorization``, ``credential`` or ``jwt`` has its value masked whatever the suffix
(``secret_id`` is a credential). Exempt are names ending ``_env``, ``_file``, ``_path`` and
``fingerprint``: those hold the name of a variable, a path to a secret, or a hash, never
the secret itself, and an operator needs them to tell which source failed.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import MutableMapping
from typing import Any, TypeVar

from rotator.core.secret import Secret

__all__ = [
    "MAX_KEYS",
    "MAX_PINNED",
    "REDACTED",
    "forget_key",
    "is_remembered",
    "looks_like_secret",
    "redact_processor",
    "redact_text",
    "remember_secret",
]

REDACTED = "[REDACTED]"

# Two live keys per target (the current and, during a rotation, the new one) for a thousand
# targets; scanning a log line against all of them costs well under a millisecond.
MAX_KEYS = 2048
MAX_PINNED = 64

_SECRET_KEYS = re.compile(r"(secret|token|password|api_?key|authorization|credential|jwt)",
                          re.IGNORECASE)
_NOT_SECRET_SUFFIXES = ("_env", "_file", "_path", "fingerprint")
_SECRET_SHAPES = re.compile(
    r"(?:\bBearer\s+\S+)"                       # an Authorization header value
    r"|(?:\bcnt_[A-Za-z0-9]{16,})"              # Count API keys
    r"|(?:\b(?:hvs|hvb|hvr|s|b)\.[A-Za-z0-9_-]{20,})"  # Vault / OpenBao tokens
    r"|(?:\beyJ[A-Za-z0-9_-]{2,}\.eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*)"  # a JWT (b64 '{"')
)
# scheme://user:password@host: the password goes, the rest still tells where it pointed.
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@]*:)[^\s/@]+@")

K = TypeVar("K")
V = TypeVar("V")

# value -> key id (None when the value is no provider key, or its id is unknown).
_keys: OrderedDict[str, str | None] = OrderedDict()
_pinned: OrderedDict[str, None] = OrderedDict()
# Digests (never the values) of keys the provider confirmed deleted: reading such a key back
# (the probe after a revoke reads it from Vault's previous version, which may not name its
# id) does not register it again; only a key that authenticates again (``alive``) does.
_deleted: OrderedDict[bytes, None] = OrderedDict()
_lock = threading.Lock()
# Every value held, longest first (so a value that holds another is masked whole); rebuilt
# only after the registry changed, not for each string scanned.
_scan_order: tuple[str, ...] | None = None


def remember_secret(secret: Secret | str, *, key_id: str | None = None,
                    pinned: bool = False, alive: bool = False) -> None:
    """Mask this value in every later log line, whatever it looks like.

    ``key_id`` lets ``forget_key`` drop a provider key once it is deleted, and a deleted key
    is not registered again unless ``alive`` (it just authenticated); ``pinned``
    marks a credential, kept apart from the keys' turnover. Remembering a value again makes
    it the newest (the last to be evicted).
    """
    value = secret.reveal() if isinstance(secret, Secret) else secret
    if len(value) < 6:
        return
    global _scan_order  # noqa: PLW0603 (the registry is the process's, by design)
    with _lock:
        digest = _digest(value)
        if digest in _deleted:
            if not alive:
                return
            del _deleted[digest]
        if pinned:
            _keep(_pinned, value, None, MAX_PINNED)
        elif value not in _pinned:
            _keep(_keys, value, key_id or _keys.get(value), MAX_KEYS)
        _scan_order = None


def _keep(registry: OrderedDict[K, V], value: K, tag: V, limit: int) -> None:
    registry[value] = tag
    registry.move_to_end(value)
    while len(registry) > limit:
        registry.popitem(last=False)


def forget_key(key_id: str) -> None:
    """The provider deleted key ``key_id``: stop scanning log lines for it."""
    global _scan_order  # noqa: PLW0603
    with _lock:
        for value in [v for v, tag in _keys.items() if tag == key_id]:
            del _keys[value]
            _keep(_deleted, _digest(value), None, MAX_KEYS)
            _scan_order = None


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def is_remembered(secret: Secret | str) -> bool:
    """Whether the registry holds this value (for tests and ``rotator`` diagnostics)."""
    value = secret.reveal() if isinstance(secret, Secret) else secret
    with _lock:
        return value in _keys or value in _pinned


def looks_like_secret(text: str) -> bool:
    """Whether ``text`` holds something shaped like a key, a token, a JWT or a URL password."""
    return bool(_SECRET_SHAPES.search(text) or _URL_PASSWORD.search(text))


def redact_text(text: str) -> str:
    global _scan_order  # noqa: PLW0603
    with _lock:
        if _scan_order is None:
            _scan_order = tuple(sorted((*_keys, *_pinned), key=len, reverse=True))
        known = _scan_order
    for value in known:
        if value in text:
            text = text.replace(value, REDACTED)
    text = _URL_PASSWORD.sub(lambda match: f"{match.group(1)}{REDACTED}@", text)
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
    return (isinstance(key, str) and bool(_SECRET_KEYS.search(key))
            and not key.lower().endswith(_NOT_SECRET_SUFFIXES))


def redact_processor(_logger: Any, _method: str,
                     event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask secrets in every value (exceptions included)."""
    for key in list(event_dict):
        value = event_dict[key]
        event_dict[key] = REDACTED if _is_secret_key(key) else _redact(value)
    return event_dict
