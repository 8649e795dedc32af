"""The JSON of ``-o json``: one function per document, its field names as docs/output.md
lists them (``tests/unit/test_output_documents.py`` holds the two together).

Plain dicts of str, int, float, bool, None, lists and dicts; timestamps RFC 3339 in UTC,
durations in seconds. Nothing here reads a secret: the values are ids, fingerprints,
steps and results, and every free text is redacted again as it leaves.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rotator.app.operations import DryRun, TargetResult
from rotator.app.orphans import Orphan
from rotator.app.status import TargetStatus
from rotator.app.verify import Finding, FindingKind
from rotator.cli.output import rfc3339
from rotator.core.model import Rotation, StoredEvent
from rotator.core.started_note import parse_started
from rotator.core.vocabulary import AuditAction
from rotator.redaction import redact_text

__all__ = ["event", "findings", "plan", "plans_summary", "result", "rotate_summary",
           "status"]


def _text(value: str | None) -> str | None:
    return None if value is None else redact_text(value)


def status(statuses: Sequence[TargetStatus], now: datetime,
           orphaned: Sequence[Orphan] = ()) -> dict[str, Any]:
    """``rotator status -o json``."""
    return {"at": rfc3339(now), "targets": [_target(s, now) for s in statuses],
            "orphans": [_orphan(o) for o in orphaned]}


def _orphan(o: Orphan) -> dict[str, Any]:
    return {"target": o.target, "rotation_id": o.rotation_id, "key_id": o.key_id,
            "step": None if o.rotation is None else o.rotation.step.value,
            "finished_by_next_run": o.finishable, "detail": _text(o.detail)}


def _target(s: TargetStatus, now: datetime) -> dict[str, Any]:
    age = None if s.key_since is None else round((now - s.key_since).total_seconds(), 3)
    return {
        "target": s.target,
        "current_key_id": s.current_key_id,
        "key_since": rfc3339(s.key_since),
        "key_age_seconds": age,
        "retiring_key_id": s.retiring_key_id,
        "retiring_until": rfc3339(s.retiring_at),
        "in_flight": None if s.in_flight is None else _in_flight(s.in_flight),
        "last": None if s.last is None else {
            "rotation_id": s.last.rotation_id, "result": s.last_result,
            "finished_at": rfc3339(s.last.finished_at), "reason": _text(s.last.reason)},
        "pending_cleanups": s.pending_cleanups,
        "old_key_pending_cleanup": s.old_key_pending,
        "revoked_keys_alive": [{"rotation_id": e.rotation_id, "key_id": e.key_id,
                                "probed_at": rfc3339(e.at)} for e in s.revoked_alive],
    }


def _in_flight(rot: Rotation) -> dict[str, Any]:
    return {"rotation_id": rot.rotation_id, "step": rot.step.value, "trigger": rot.trigger,
            "actor": rot.actor, "started_at": rfc3339(rot.started_at),
            "grace_ends_at": rfc3339(rot.grace_ends_at)}


def findings(found: Sequence[Finding], checked: int) -> dict[str, Any]:
    """``rotator verify -o json``."""
    return {
        "checked": checked,
        "findings": [{"kind": f.kind.value, "target": f.target, "rotation_id": f.rotation_id,
                      "key_id": f.key_id, "detail": _text(f.detail)} for f in found],
        "could_not_check": sorted({f.target for f in found
                                   if f.kind is FindingKind.COULD_NOT_CHECK}),
    }


def plan(dry: DryRun) -> dict[str, Any]:
    """One target of ``rotator rotate --dry-run -o json``."""
    return {"type": "plan", "target": dry.target, "ok": dry.ok,
            "lines": [redact_text(line) for line in dry.lines]}


def result(done: TargetResult) -> dict[str, Any]:
    """One target of ``rotator rotate -o json``, as it finishes."""
    return {"type": "result", "target": done.target, "outcome": done.outcome,
            "rotated": done.rotated, "rotation_id": done.rotation_id, "joined": done.joined,
            "elapsed_seconds": round(done.elapsed, 3), "detail": _text(done.detail)}


def rotate_summary(results: Sequence[TargetResult], exit_code: int) -> dict[str, Any]:
    """The last line of ``rotator rotate -o json``."""
    return {"type": "summary", "dry_run": False, "targets": len(results),
            "rotated": sum(r.rotated for r in results),
            "outcomes": dict(sorted(Counter(r.outcome for r in results).items())),
            "not_rotated": [r.target for r in results if not r.rotated],
            "exit_code": exit_code}


def plans_summary(plans: Sequence[DryRun], exit_code: int) -> dict[str, Any]:
    """The last line of ``rotator rotate --dry-run -o json``."""
    return {"type": "summary", "dry_run": True, "targets": len(plans),
            "ok": sum(p.ok for p in plans), "exit_code": exit_code}


def event(stored: StoredEvent) -> dict[str, Any]:
    """One row of ``rotator audit -o json``: the stored columns, and the actor of a
    started event (its detail names who started the rotation: ``started_note``)."""
    note = parse_started(stored.detail) if stored.action == AuditAction.STARTED else None
    return {**stored.as_dict(), "at": rfc3339(stored.at),
            "actor": None if note is None else note.actor}
