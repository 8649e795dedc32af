"""Turning pydantic's validation errors into {dotted config key: message (line N)}."""

from __future__ import annotations

import re

from pydantic import ValidationError

__all__ = ["KeyedProblem", "problems_by_key"]


class KeyedProblem(ValueError):
    """A cross-field problem that belongs to a key deeper than the validator's own.

    Raised inside a validator, it reaches ``problems_by_key`` as itself (pydantic keeps
    the exception in the error's context), so its key and message are read as fields.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def problems_by_key(exc: ValidationError, text: str) -> dict[str, str]:
    problems: dict[str, str] = {}
    for err in exc.errors():
        loc = _key_path(err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, KeyedProblem):
            key, msg = cause.key, cause.message
        else:
            key = ".".join(loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        line = _line_of(text, key)
        problems[key] = f"{msg} (line {line})" if line else msg
    return problems


# How pydantic names a validator or union member in a location: "function-after[f(), str]".
_PYDANTIC_TAG = re.compile(r"[a-z][a-z0-9-]*\[.*\]")


def _key_path(loc: tuple[int | str, ...]) -> list[str]:
    # pydantic puts validator names and the union member's tag in locations: not keys.
    path: list[str] = []
    for part in loc:
        text = str(part)
        if _PYDANTIC_TAG.fullmatch(text) or (
                path[-1:] == ["auth"] and text in {"token", "approle", "kubernetes"}):
            continue
        path.append(text)
    return path


def _line_of(text: str, dotted: str) -> int | None:
    """The line where ``dotted`` (``targets.x.grace``) is written, if it is."""
    *table, leaf = dotted.split(".")
    current: list[str] = []
    # Not splitlines(): TOML breaks lines at "\n" only, not at a "\x85" or "\u2028" that a
    # string or comment holds.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            current = [p.strip().strip('"') for p in line.strip("[]").split(".")]
            if current == [*table, leaf]:
                return number
            continue
        key = line.split("=", 1)[0].strip().strip('"')
        if "=" in line and key == leaf and current == table:
            return number
    return None
