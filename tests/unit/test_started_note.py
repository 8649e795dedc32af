"""The started event's detail names the actor, and the rows written before still read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rotator.core.started_note import StartedNote, parse_started, started_detail

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "rows_written_before_vocabulary.json"


def test_the_detail_reads_back_as_written() -> None:
    detail = started_detail("run_rotate", "alice@bastion", 86400.0, "SEC-42: leaked")
    assert detail == "run_rotate rotation by alice@bastion; grace 86400s; reason: SEC-42: leaked"
    assert parse_started(detail) == StartedNote("run_rotate", "alice@bastion", 86400.0,
                                                "SEC-42: leaked")
    assert parse_started(started_detail("schedule", "scheduler", 0.2, None)) == StartedNote(
        "schedule", "scheduler", 0.2, None)


def test_a_reason_that_looks_like_the_form_does_not_move_the_actor() -> None:
    detail = started_detail("manual", "bob@h", 30, "x; grace 5s; reason: y by mallory")
    note = parse_started(detail)
    assert note is not None and note.actor == "bob@h"
    assert note.reason == "x; grace 5s; reason: y by mallory"


@pytest.mark.parametrize("detail", [None, "", "grace over", "manual rotation by ; grace 1s",
                                    "manual rotation by cli; grace soon"])
def test_another_detail_is_not_a_started_note(detail: str | None) -> None:
    assert parse_started(detail) is None


def test_the_started_events_written_before_name_their_rotations_actor() -> None:
    rows = json.loads(FIXTURE.read_text())
    actors = {r["rotation_id"]: r["actor"] for r in rows["rotations"]}
    started = [e for e in rows["rotation_events"] if e["action"] == "started"]
    assert len(started) == len(actors) > 0
    for event in started:
        note = parse_started(event["detail"])
        assert note is not None, event["detail"]
        assert note.actor == actors[event["rotation_id"]]
