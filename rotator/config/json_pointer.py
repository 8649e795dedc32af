"""JSON Pointers (RFC 6901): ``/data/items/0/id`` names one value inside a document.

Parsed once, when the config is read (a malformed pointer is a config problem named by
key and line); resolved by the generic HTTP provider on every answer. Pure.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["MISSING", "parse_pointer", "resolve"]

MISSING: Any = object()   # what ``resolve`` returns where the document has no such value
_INDEX = re.compile(r"0|[1-9][0-9]{0,8}")


def parse_pointer(text: str) -> tuple[str, ...]:
    """The reference tokens of ``text``: ``""`` is the whole document, ``"/a~1b/0"``
    is ``("a/b", "0")``. ``ValueError`` (quoting nothing of it) if it is no pointer."""
    if text == "":
        return ()
    if not text.startswith("/"):
        raise ValueError("a JSON pointer is empty or starts with '/' (RFC 6901)")
    tokens = text[1:].split("/")
    for token in tokens:
        if "~" in token.replace("~0", "").replace("~1", ""):
            raise ValueError("a JSON pointer writes '~' as '~0' and '/' as '~1' (RFC 6901)")
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in tokens)


def resolve(document: object, tokens: tuple[str, ...]) -> Any:
    """The value ``tokens`` point at in ``document``, or ``MISSING``."""
    current: object = document
    for token in tokens:
        if isinstance(current, dict):
            if token not in current:
                return MISSING
            current = current[token]
        elif isinstance(current, list):
            # RFC 6901: a decimal index without leading zeros; "-" (past the end) is none.
            if not _INDEX.fullmatch(token):
                return MISSING
            index = int(token)
            if index >= len(current):
                return MISSING
            current = current[index]
        else:
            return MISSING
    return current
