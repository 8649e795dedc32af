"""``Secret``: a string that refuses to show itself, and its audit fingerprint.

Key material travels wrapped so that a stray ``repr``, f-string or log call prints
``Secret('****')`` rather than the key. Only the adapters that must send the value
(an Authorization header, a Vault write) call ``reveal()``.
"""

from __future__ import annotations

import hashlib

__all__ = ["FINGERPRINT_LENGTH", "Secret", "fingerprint"]

# 12 hex digits (48 bits) tell keys apart in an audit trail without helping anyone
# who wants to guess the key: a fingerprint of a high-entropy key reveals nothing usable.
FINGERPRINT_LENGTH = 12


def fingerprint(value: str) -> str:
    """Short SHA-256 fingerprint of key material, safe to store and print."""
    return "sha256:" + hashlib.sha256(value.encode("utf-8")).hexdigest()[:FINGERPRINT_LENGTH]


class Secret:
    """Key material. Compares by value, prints as ``****``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError("a secret must be a non-empty string")
        self._value = value

    def reveal(self) -> str:
        return self._value

    @property
    def fingerprint(self) -> str:
        return fingerprint(self._value)

    def __repr__(self) -> str:
        return "Secret('****')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("secrets are not picklable")
