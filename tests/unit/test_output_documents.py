"""``-o json``'s documents carry exactly the fields docs/output.md lists, timestamps with
their zone; the tables print plain and uncut when piped."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from rotator.app.operations import DryRun, TargetResult
from rotator.app.orphans import Orphan
from rotator.app.status import TargetStatus
from rotator.app.verify import Finding, FindingKind
from rotator.cli import documents
from rotator.cli.output import Table, human_time, rfc3339, show
from rotator.core.model import Rotation, Status, Step, StoredEvent
from rotator.core.vocabulary import EventKind

DOC = Path(__file__).resolve().parents[2] / "docs" / "output.md"
T0 = datetime(2026, 12, 2, 19, 40, 48, 123456, tzinfo=UTC)


def _documented() -> dict[str, set[str]]:
    """``### heading`` -> the field names of the table under it."""
    fields: dict[str, set[str]] = {}
    heading = ""
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
            continue
        if found := re.match(r"\| `(\w+)` \|", line):
            fields.setdefault(heading, set()).add(found[1])
    return fields


def _rotation(**changes: Any) -> Rotation:
    return Rotation(rotation_id="rot_1", target="app", service_account="sa", trigger="manual",
                    actor="alice@h", grace_seconds=60, started_at=T0).evolve(**changes)


def _event(action: str, detail: str | None) -> StoredEvent:
    return StoredEvent(id=1, at=T0, rotation_id="rot_1", target="app", step="plan",
                       kind=EventKind.NOTE, action=action, result="ok", key_id=None,
                       fingerprint=None, vault_version=None, request_id=None, op_id=None,
                       detail=detail)


def test_every_document_has_the_documented_fields_and_no_other() -> None:
    docs = _documented()
    alive = _event("probe_revoked", None)
    status = documents.status([TargetStatus(
        target="app", current_key_id="k2", key_since=T0, retiring_key_id="k1",
        retiring_at=T0 + timedelta(minutes=1),
        in_flight=_rotation(step=Step.GRACE, grace_ends_at=T0),
        last=_rotation(status=Status.ROLLED_BACK, finished_at=T0, reason="verify: x"),
        last_result="rolled_back", pending_cleanups=0, revoked_alive=(alive,))],
        T0 + timedelta(seconds=90),
        [Orphan("gone", rotation=_rotation(target="gone", step=Step.GRACE),
                blocked="its provider 'count' is no longer in the config")])
    [target] = status["targets"]
    [orphan] = status["orphans"]
    assert set(status) == docs["`rotator status -o json`"]
    assert set(orphan) == docs["status: an orphan"]
    assert (orphan["target"], orphan["rotation_id"], orphan["key_id"], orphan["step"],
            orphan["finished_by_next_run"]) == ("gone", "rot_1", None, "grace", False)
    assert "put [targets.gone] back" in orphan["detail"]
    assert set(target) == docs["status: a target"]
    assert set(target["in_flight"]) == docs["status: in_flight"]
    assert set(target["last"]) == docs["status: last"]
    assert set(target["revoked_keys_alive"][0]) == docs["status: revoked_keys_alive"]
    assert target["key_age_seconds"] == 90.0

    verify = documents.findings([Finding(FindingKind.LEAKED_KEY, "app", "lives")], 2)
    assert set(verify) == docs["`rotator verify -o json`"]
    assert set(verify["findings"][0]) == docs["verify: a finding"]

    done = TargetResult("app", "completed", "rot_1", None, elapsed=1.5)
    assert set(documents.plan(DryRun("app", ["plan: ..."], True))) == docs["rotate: plan"]
    assert set(documents.result(done)) == docs["rotate: result"]
    summaries = (documents.rotate_summary([done], 0),
                 documents.plans_summary([DryRun("app", [], True)], 0))
    assert set(summaries[0]) | set(summaries[1]) == docs["rotate: summary"]

    started = documents.event(_event("started", "manual rotation by alice@h; grace 60s"))
    assert set(started) == docs["audit: an event"] and started["actor"] == "alice@h"
    assert documents.event(_event("plan", "manual rotation by x; grace 1s"))["actor"] is None


def test_timestamps_carry_their_zone() -> None:
    east = T0.astimezone(timezone(timedelta(hours=2)))
    assert rfc3339(east) == "2026-12-02T19:40:48.123456+00:00" and rfc3339(None) is None
    assert human_time(east) == "2026-12-02 19:40:48 UTC"
    assert datetime.fromisoformat(documents.status([], T0)["at"]) == T0


def test_a_piped_table_is_plain_with_every_cell_whole() -> None:
    long = "x" * 300
    out = io.StringIO()
    show([Table.of(["at", "detail", "none"], [[T0, long, None]]), "1 row"], out)
    header, row, tail = out.getvalue().splitlines()
    assert header.split() == ["AT", "DETAIL", "NONE"]
    assert row == f"2026-12-02 19:40:48 UTC  {long}  -"
    assert tail == "1 row" and "\x1b" not in out.getvalue()
