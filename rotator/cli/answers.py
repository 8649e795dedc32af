"""What each command prints on stdout, in the format ``-o`` asked for.

``main`` calls one of these with what the use case returned; the table forms are
``render``'s, the JSON ones ``documents``'s, and ``output`` writes either. A command added
later takes ``-o json`` with ``output.add_output_option`` and a function here.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TextIO

from rotator.app.operations import DryRun, TargetResult
from rotator.app.orphans import Orphan
from rotator.app.status import TargetStatus
from rotator.app.verify import Finding
from rotator.cli import documents
from rotator.cli import render as report
from rotator.cli.output import show, write_json, write_json_line
from rotator.core.model import StoredEvent

__all__ = ["RotateAnswer", "events", "findings", "status"]


def status(statuses: Sequence[TargetStatus], now: datetime, fmt: str,
           orphaned: Sequence[Orphan] = ()) -> None:
    if fmt == "json":
        write_json(documents.status(statuses, now, orphaned), sys.stdout)
    else:
        show(report.render_status(statuses, now, orphaned), sys.stdout)


def findings(found: Sequence[Finding], checked: int, fmt: str) -> None:
    if fmt == "json":
        write_json(documents.findings(found, checked), sys.stdout)
    else:
        show(report.render_findings(found, checked), sys.stdout)


def events(stored: Sequence[StoredEvent], fmt: str) -> None:
    """``audit show``: a table, JSON (a list of events) or CSV."""
    if fmt == "json":
        write_json([documents.event(e) for e in stored], sys.stdout)
    elif fmt == "csv":    # for a program even on a terminal: written as it is
        sys.stdout.write(report.events_csv(stored) + "\n")
    else:
        show(report.render_events(stored), sys.stdout)


class RotateAnswer:
    """``rotate``'s output: a line per target as it finishes (``progress``), then the
    summary; in JSON, one object a line of each (``type`` says which)."""

    def __init__(self, fmt: str, stream: TextIO | None = None) -> None:
        self._json = fmt == "json"
        self._stream = stream or sys.stdout

    def plans(self, plans: Sequence[DryRun], exit_code: int) -> None:
        """``--dry-run``: what each target's rotation would do."""
        for dry in plans:
            if self._json:
                write_json_line(documents.plan(dry), self._stream)
            else:
                print(f"{dry.target}:", file=self._stream)
                print("\n".join(f"  {line}" for line in dry.lines), file=self._stream)
        if self._json:
            write_json_line(documents.plans_summary(plans, exit_code), self._stream)

    def progress(self, result: TargetResult) -> None:
        if self._json:
            write_json_line(documents.result(result), self._stream)
        else:
            print(report.render_progress(result), file=self._stream, flush=True)

    def summary(self, results: Sequence[TargetResult], exit_code: int) -> None:
        if self._json:
            write_json_line(documents.rotate_summary(results, exit_code), self._stream)
        else:
            print(report.render_summary(results), file=self._stream)
