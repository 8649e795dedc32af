"""Rendering for the terminal and for export: tables, text, CSV and JSON lines.

The tables come out as ``output.Block`` lists, which ``output.show`` draws for a terminal
or prints plain; the JSON documents of ``-o json`` are ``documents``'s. No secrets reach
here.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime

from rotator.app.operations import TargetResult
from rotator.app.orphans import Orphan
from rotator.app.reconcile import ReconcileReport
from rotator.app.status import TargetStatus
from rotator.app.verify import Finding, FindingKind
from rotator.cli.output import Block, Table, human_time
from rotator.core.audit_chain import ChainReport
from rotator.core.durations import format_duration
from rotator.core.model import StoredEvent
from rotator.redaction import redact_text

__all__ = ["events_csv", "export_lines", "render_chain_report", "render_events",
           "render_findings", "render_orphans", "render_progress", "render_reconcile",
           "render_status", "render_summary"]

_EVENT_COLUMNS = ["at", "target", "rotation_id", "step", "kind", "action", "result", "key_id",
                  "fingerprint", "vault_version", "request_id", "detail"]


_CSV_COLUMNS = ["id", *_EVENT_COLUMNS, "op_id", "lease_generation", "chain_seq", "chain_hash"]


def events_csv(events: Sequence[StoredEvent]) -> str:
    """Every column of ``events``, with a header (``audit show --format csv``)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(e.as_dict() for e in events)
    return buf.getvalue().rstrip("\n")


def render_events(events: Sequence[StoredEvent]) -> list[Block]:
    """The table of ``audit show`` (its JSON is ``documents.event``'s)."""
    short = ["at", "target", "rotation_id", "step", "kind", "action", "result", "key_id",
             "vault_version", "detail"]
    rows = [[e.at, e.target, e.rotation_id, e.step, e.kind.value, e.action, e.result,
             e.key_id, e.vault_version, _trim(e.detail)] for e in events]
    return [Table.of(short, rows)]


def export_lines(events: Iterable[StoredEvent], fmt: str) -> Iterator[str]:
    """``events`` as JSON lines or CSV (with a header), one line at a time."""
    if fmt == "jsonl":
        for event in events:
            yield json.dumps(event.as_dict(), separators=(",", ":")) + "\n"
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for event in events:
        writer.writerow(event.as_dict())
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
    yield buf.getvalue()   # the header alone, when there are no events


def render_chain_report(report: ChainReport) -> list[Block]:
    """Each target's first broken link, or "no breaks"."""
    checked = f"{report.targets} target(s), {report.events} event(s)"
    if not report.breaks:
        return [f"{checked}: no breaks"]
    rows = [[b.target, b.event_id, b.kind.value, b.detail] for b in report.breaks]
    return [Table.of(["target", "event", "break", "detail"], rows),
            f"{len(report.breaks)} broken chain(s) in {checked}"]


def _trim(text: str | None, width: int = 60) -> str | None:
    if text is None or len(text) <= width:
        return text
    return text[: width - 1] + "…"


def render_progress(result: TargetResult) -> str:
    """One finished target on one plain line: target, result, rotation id, elapsed; why,
    when it did not complete."""
    outcome = result.outcome + (" (joined)" if result.joined else "")
    line = (f"{result.target}: {outcome}, rotation {result.rotation_id or '-'}, "
            f"{_elapsed(result.elapsed)}")
    if not result.ok and result.detail:   # completed_pending_cleanup says which key
        line += f": {' '.join(redact_text(result.detail).split())}"
    if result.next_step:
        line += f"\n  next step: {redact_text(result.next_step)}"
    return line


def render_summary(results: Sequence[TargetResult]) -> str:
    """Counts per result, then the targets not rotated."""
    counts = Counter(r.outcome for r in results)
    per_result = ", ".join(f"{count} {outcome}" for outcome, count in sorted(counts.items()))
    out = (f"{sum(r.rotated for r in results)} of {len(results)} target(s) rotated"
           + (f" ({per_result})" if results else ""))
    failed = [f"{r.target} ({r.outcome})" for r in results if not r.rotated]
    if failed:
        out += "\nnot rotated: " + ", ".join(failed)
    return out


def _elapsed(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 60 else format_duration(seconds)


def render_status(statuses: Sequence[TargetStatus], now: datetime,
                  orphaned: Sequence[Orphan] = ()) -> list[Block]:
    rows = []
    for s in statuses:
        age = format_duration((now - s.key_since).total_seconds()) if s.key_since else None
        flight = (f"{s.in_flight.rotation_id} ({s.in_flight.step.value})"
                  if s.in_flight else None)
        rows.append([s.target, s.current_key_id or "unknown", age, _retiring(s), flight,
                     _last_result(s), s.pending_cleanups or None])
    out: list[Block] = [Table.of(["target", "current key", "age", "retiring", "in flight",
                                  "last result", "cleanup"], rows,
                                 wrap=("retiring", "last result"))]
    alive = [[FindingKind.REVOKED_KEY_ALIVE.value, s.target, e.rotation_id, e.key_id,
              f"deleted, but still authenticating when probed at {human_time(e.at)}: the "
              "provider did not revoke it (rotator verify probes it again)"]
             for s in statuses for e in s.revoked_alive]
    if alive:
        out += ["", Table.of(["finding", "target", "rotation", "key", "detail"], alive)]
    steps = [f"  {s.target}: {redact_text(s.next_step)}" for s in statuses if s.next_step]
    if steps:
        out += ["", "next steps (the last rotation was refused and changed nothing):\n"
                + "\n".join(steps)]
    # The rotation id first: a row of the table above starts with its target.
    stuck = [[s.in_flight.rotation_id, s.target, s.in_flight.step.value,
              _since(s.step_since, now), s.step_why]
             for s in statuses if s.in_flight is not None]
    if stuck:
        out += ["", Table.of(["in flight", "target", "step", "in step for", "why"], stuck)]
    if orphaned:
        out += ["", render_orphans(orphaned)]
    return out


def _since(when: datetime | None, now: datetime) -> str | None:
    return None if when is None else format_duration(max(0.0, (now - when).total_seconds()))


def render_orphans(orphaned: Sequence[Orphan]) -> Table:
    """Work SQL holds for targets no longer in the config, and what to do about it."""
    rows = [["orphan", o.target, o.rotation_id, o.key_id, o.detail] for o in orphaned]
    return Table.of(["finding", "target", "rotation", "key", "detail"], rows)


def render_reconcile(report: ReconcileReport, now: datetime, fix: bool) -> list[Block]:
    """The stray keys (with what ``--fix`` did), the targets not checked, the orphans."""
    parts: list[Block] = []
    if report.strays:
        rows = [[s.target, s.service_account, s.key.key_id, s.key.name,
                 _since(s.key.created_at, now), human_time(s.key.last_used_at)
                 if s.key.last_used_at else "never", s.outcome, s.note]
                for s in report.strays]
        parts += [Table.of(["target", "account", "key", "name", "age", "last used",
                            "result", "note"], rows), ""]
    if report.unchecked:
        parts += [Table.of(["could not check", "reason"],
                           [[u.target, u.reason] for u in report.unchecked]), ""]
    if report.orphans:
        parts += [render_orphans(report.orphans), ""]
    left = sum(s.remains for s in report.strays)
    gone = len(report.strays) - left
    summary = (f"{len(report.strays)} stray key(s) in {report.checked} target(s)"
               + (f": {gone} deleted, {left} left" if fix else "")
               + (f"; {len(report.unchecked)} target(s) could not be checked: nothing of "
                  "them was called stray or deleted" if report.unchecked else "")
               + (f"; {len(report.orphans)} orphan(s)" if report.orphans else ""))
    if not report.strays and not report.unchecked and not report.orphans:
        summary = f"ok: {report.checked} target(s) checked, no stray key"
    elif report.strays and not fix and left:
        summary += " (rotator reconcile --fix deletes them)"
    return [*parts, summary]


def _retiring(s: TargetStatus) -> str | None:
    """The previous key, still live: deleted at its grace deadline, or queued."""
    if s.retiring_key_id is None:
        return None
    if s.retiring_at is not None:
        return f"{s.retiring_key_id} until {human_time(s.retiring_at)}"
    return f"{s.retiring_key_id} (its deletion failed: queued for cleanup)"


def _last_result(s: TargetStatus) -> str:
    if s.last is None:
        return "none ended yet" if s.in_flight else "never rotated"
    reason = f": {_trim(s.last.reason, 50)}" if s.last.reason else ""
    finished = "-" if s.last.finished_at is None else human_time(s.last.finished_at)
    return f"{s.last_result} {finished}{reason}"


def render_findings(findings: Sequence[Finding], checked: int) -> list[Block]:
    if not findings:
        return [f"ok: {checked} target(s) checked, no findings"]
    rows = [[f.kind.value, f.target, f.rotation_id, f.key_id, f.detail] for f in findings]
    unchecked = sorted({f.target for f in findings if f.kind is FindingKind.COULD_NOT_CHECK})
    broken = sum(f.kind is not FindingKind.COULD_NOT_CHECK for f in findings)
    summary = f"{broken} finding(s) in {checked} target(s)"
    if unchecked:
        summary += (f"; {len(unchecked)} target(s) could not be checked "
                    f"({', '.join(unchecked)}): what could not be read proves nothing")
    return [Table.of(["finding", "target", "rotation", "key", "detail"], rows), summary]
