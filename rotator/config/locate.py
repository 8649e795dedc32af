"""Turning pydantic's validation errors into {dotted config key: message (line N)}.

No value reaches a message: pydantic's ``input`` is never rendered, and what a validator
quotes of the value it refused is cut out (only our own ``KeyedProblem``/``FieldProblem``
messages, which quote none, are kept as written).
"""

from __future__ import annotations

import re

from pydantic import ValidationError

__all__ = ["FieldProblem", "KeyedProblem", "problems_by_key"]


class KeyedProblem(ValueError):
    """A cross-field problem that belongs to a key deeper than the validator's own.

    Raised inside a validator, it reaches ``problems_by_key`` as itself (pydantic keeps
    the exception in the error's context), so its key and message are read as fields.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


class FieldProblem(ValueError):
    """A problem of one key of the validating model, named relative to it (``token_env``).

    ``problems_by_key`` puts the model's own location in front. ``field`` may name two
    keys as ``a/b`` (a choice between them); the line is that of the first one written.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def problems_by_key(exc: ValidationError, text: str) -> dict[str, str]:
    problems: dict[str, str] = {}
    for err in exc.errors():
        loc = _key_path(err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        cause = err.get("ctx", {}).get("error")
        lines_of = None
        if isinstance(cause, KeyedProblem):
            key, msg = cause.key, cause.message
        elif isinstance(cause, FieldProblem):
            key, msg = ".".join([*loc, cause.field]), cause.message
            lines_of = [*(".".join([*loc, name]) for name in cause.field.split("/")),
                        ".".join(loc)]
        else:
            key = ".".join(loc) or "(top level)"
            # A validator of ours or of a library (a duration, a cron field) may quote what
            # it refuses; the value may be a secret written in the wrong key.
            msg = _without_values(msg, err.get("input"))
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "union_tag_not_found":   # [vault.auth] without its method
            tag = str(err.get("ctx", {}).get("discriminator", "")).strip("'")
            key = f"{key}.{tag}"
            msg = "required key is missing"
        elif err["type"] == "union_tag_invalid":     # a [providers.*] type = "nope"
            ctx = err.get("ctx", {})
            key = f"{key}.{str(ctx.get('discriminator', '')).strip(chr(39))}"
            msg = f"expected one of {ctx.get('expected_tags', '')}"
        # Only msg, never err["input"]: the value may be a secret written in the wrong key.
        line = next(filter(None, (_line_of(text, k) for k in lines_of or [key])), None)
        problems[key] = f"{msg} (line {line})" if line else msg
    return problems


# Shorter strings are words of the messages themselves ("self", "token"), not worth hiding.
_SHORTEST_HIDDEN = 6


def _without_values(message: str, given: object) -> str:
    """``message`` with every string of ``given`` (the refused input) cut out."""
    values: list[str] = []
    stack = [given]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            values.append(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    for value in sorted(values, key=len, reverse=True):
        if len(value) >= _SHORTEST_HIDDEN:
            message = message.replace(repr(value), "(the value)").replace(value, "(the value)")
    return message


# How pydantic names a validator or union member in a location: "function-after[f(), str]".
_PYDANTIC_TAG = re.compile(r"[a-z][a-z0-9-]*\[.*\]")


def _key_path(loc: tuple[int | str, ...]) -> list[str]:
    # pydantic puts validator names and the union member's tag in locations: not keys.
    path: list[str] = []
    for part in loc:
        text = str(part)
        if _PYDANTIC_TAG.fullmatch(text) or (
                path[-1:] == ["auth"] and text in {"token", "approle", "kubernetes"}) or (
                path[:1] == ["providers"] and len(path) == 2 and text in {"count", "http"}):
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
