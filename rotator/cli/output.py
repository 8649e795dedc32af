"""How a command's answer reaches stdout: a table for people, or JSON for programs.

``-o json`` (``--output json``) is the same for every command that has it: one JSON
document (``status``, ``verify``, ``audit``), or one JSON object a line, as things happen
(``rotate``). Only the answer goes to stdout; logs and notices stay on stderr, so
``rotator status -o json | jq`` reads clean JSON. The field names are documented in
docs/output.md and do not change: a new field may be added, none is renamed or removed.

A table on a terminal is drawn by rich, fitted to the terminal's width: a long cell of free
text wraps inside its column; ids and times stay whole while the terminal has room.
Piped, it is plain text in columns as wide as their widest cell, one row a line, for
``grep``, ``awk`` and ``cut``. Timestamps carry their zone
everywhere: ``2026-12-02 19:40:48 UTC`` for people, RFC 3339 in JSON.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = ["OUTPUTS", "Block", "Table", "add_output_option", "human_time", "rfc3339",
           "show", "write_json", "write_json_line"]

OUTPUTS = ("table", "json")


def add_output_option(parser: argparse.ArgumentParser, *, what: str) -> None:
    """``-o/--output table|json`` on a command (``what``: what the JSON holds)."""
    parser.add_argument("-o", "--output", choices=OUTPUTS, default="table",
                        help=f"table: for people (default); json: {what}, field names in "
                             "docs/output.md")


def rfc3339(moment: datetime | None) -> str | None:
    """``moment`` in UTC as RFC 3339 (``2026-12-02T19:40:48.123456+00:00``)."""
    if moment is None:
        return None
    return _utc(moment).isoformat()


def human_time(moment: datetime) -> str:
    """``moment`` for people, to the second, with its zone: ``2026-12-02 19:40:48 UTC``."""
    return _utc(moment).strftime("%Y-%m-%d %H:%M:%S UTC")


def _utc(moment: datetime) -> datetime:
    # rotator stores and computes in UTC; a naive value here is UTC that lost its zone.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def write_json(document: Any, stream: TextIO) -> None:
    stream.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def write_json_line(document: Any, stream: TextIO) -> None:
    """One compact object on one line, flushed: a reader sees each as it happens."""
    stream.write(json.dumps(document, separators=(",", ":"), ensure_ascii=False) + "\n")
    stream.flush()


@dataclass(frozen=True, slots=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    # The columns of free text, which wrap on a narrow terminal; the others (ids, times,
    # steps) stay on one line while there is room, so they can be copied whole.
    wrap: frozenset[str]

    @classmethod
    def of(cls, headers: Sequence[str], rows: Iterable[Sequence[object]],
           wrap: Iterable[str] | None = None) -> Table:
        """``wrap``: the free-text columns (default: the last one)."""
        return cls(tuple(headers), tuple(tuple(_cell(v) for v in row) for row in rows),
                   frozenset(headers[-1:] if wrap is None else wrap))

    def plain(self) -> str:
        """Columns as wide as their widest cell, nothing cut."""
        widths = [max([len(h), *(len(r[i]) for r in self.rows)])
                  for i, h in enumerate(self.headers)]
        lines = ["  ".join(h.upper().ljust(w) for h, w in zip(self.headers, widths, strict=True))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                  for row in self.rows]
        return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return human_time(value)
    return str(value)


# What a command prints: tables and lines of text, in order.
Block = Table | str


def show(blocks: Sequence[Block], stream: TextIO) -> None:
    """``blocks`` on ``stream``: with rich on a terminal, else as plain text."""
    if stream.isatty():
        _rich(blocks, stream)
        return
    stream.write("\n".join(b.plain() if isinstance(b, Table) else b for b in blocks) + "\n")


def _rich(blocks: Sequence[Block], stream: TextIO) -> None:
    # Imported here: only a terminal needs it, and `rotator` starts faster without it.
    from rich import box  # noqa: PLC0415
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table as RichTable  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    # No markup, emoji or highlighting: a cell is printed as stored, whatever it holds.
    console = Console(file=stream, markup=False, emoji=False, highlight=False)
    for block in blocks:
        if isinstance(block, str):
            # soft_wrap: the terminal wraps a long line; rich adds no line break to it.
            console.print(Text(block), soft_wrap=True)
            continue
        drawn = RichTable(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                          header_style="bold")
        for header in block.headers:
            free = header in block.wrap
            # rich narrows the wrapping columns first, and the others only when the
            # terminal is too narrow even so (then cut with an ellipsis: piped, never).
            drawn.add_column(header.upper(), no_wrap=not free,
                             overflow="fold" if free else "ellipsis")
        for row in block.rows:
            drawn.add_row(*(Text(cell) for cell in row))
        console.print(drawn)
