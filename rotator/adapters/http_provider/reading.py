"""Reading a ``type = "http"`` provider's answers through the config's JSON pointers.

``PointerFields`` is ``Fields`` addressed by pointer (a failure names the pointer it
followed, ``/data/credentials/2/id``); ``reading`` says where the request id and the error
code are; ``plain_detail`` keeps an error's message only when it cannot be key material.
Pure.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from rotator.adapters.keyapi.wire import Fields, Reading
from rotator.config.http_provider import HttpProviderConfig, pointer_tokens
from rotator.config.json_pointer import MISSING, resolve

__all__ = ["PointerFields", "plain_detail", "reading"]

# An error's message is shown only if short, printable ASCII, and without a run of
# characters long enough to be a key or token a server echoed back.
_DETAIL = re.compile(r"[ -~]{1,120}")
_KEYLIKE = re.compile(r"[A-Za-z0-9_\-+/=.]{20,}")


class PointerFields(Fields):
    """Reads by JSON pointer, relative to this object (``where`` is its own pointer)."""

    def _get(self, name: str) -> object:
        value = resolve(self._obj, pointer_tokens(name))
        return None if value is MISSING else value

    def _field(self, name: str) -> str:
        return f"{self._where}{name}" or "(the whole body)"

    def _child(self, item: object, index: int, name: str) -> Fields:
        return PointerFields(self._call, item, f"{self._where}{name}/{index}")

    def text_or_none(self, name: str) -> str | None:
        value = self._get(name)
        return value if isinstance(value, str) else None


def _at(pointer: str | None) -> Callable[[Any], object]:
    if pointer is None:
        return lambda _document: None
    tokens = pointer_tokens(pointer)

    def read(document: Any) -> object:
        value = resolve(document, tokens)
        return None if value is MISSING else value
    return read


def reading(config: HttpProviderConfig) -> Reading:
    return Reading(request_id=_at(config.request_id), code=_at(config.error_code),
                   request_id_header=config.request_id_header)


def plain_detail(config: HttpProviderConfig, document: object,
                 *secrets: str) -> str | None:
    """The error message the config points at, if it is plain short text: no secret, and
    nothing shaped like a key (the message ends up in logs and the audit)."""
    value = _at(config.error_message)(document)
    if not isinstance(value, str) or not _DETAIL.fullmatch(value):
        return None
    if _KEYLIKE.search(value) or any(s and s in value for s in secrets):
        return None
    return value
