"""``-o json`` of ``rotate`` (its progress and ``--dry-run``) and ``audit``, the audit
filters, and tables: fitted to a terminal by rich, plain and uncut when piped.

Through the real command, on SQLite and PostgreSQL (the ``make_world`` database).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import pytest

from rotator.app.operations import whoami_actor
from tests.integration.conftest import MakeWorld
from tests.integration.terminal import on_a_pty
from tests.integration.world import World

pytestmark = pytest.mark.integration


def _lines(stdout: str) -> list[dict[str, Any]]:
    """Every line of stdout is one JSON object (no log line among them)."""
    return [json.loads(line) for line in stdout.splitlines()]


def _audit(world: World, *args: str) -> list[dict[str, Any]]:
    """``rotator audit -o json ARGS``, in this process (what it prints is the subject, not
    the process: the commands whose stderr or terminal matters run as processes)."""
    code, stdout = world.cli_here("audit", "-o", "json", *args)
    assert code == 0, stdout[-2000:]
    events: list[dict[str, Any]] = json.loads(stdout)
    return events


def test_rotate_json_lines_then_the_audit_of_one_rotation(make_world: MakeWorld) -> None:
    world = make_world("a", "b", grace="0s")
    dry = world.cli("rotate", "--all", "--dry-run", "-o", "json")
    assert dry.returncode == 0, dry.stderr[-2000:]
    *plans, summary = _lines(dry.stdout)
    assert [(p["type"], p["target"], p["ok"]) for p in plans] == [
        ("plan", "a", True), ("plan", "b", True)]
    assert all(p["lines"] and isinstance(p["lines"][0], str) for p in plans)
    assert summary == {"type": "summary", "dry_run": True, "targets": 2, "ok": 2,
                       "exit_code": 0}
    assert world.rotations() == []                     # a dry run changes nothing

    done = world.cli("rotate", "--all", "--concurrency", "2", "-o", "json")
    assert done.returncode == 0, done.stderr[-2000:]
    *results, summary = _lines(done.stdout)
    assert sorted((r["type"], r["target"], r["outcome"], r["rotated"], r["joined"])
                  for r in results) == [("result", "a", "completed", True, False),
                                        ("result", "b", "completed", True, False)]
    rotation_of = {r["target"]: r["rotation_id"] for r in results}
    assert {r.rotation_id for r in world.rotations()} == set(rotation_of.values())
    assert all(r["elapsed_seconds"] >= 0 and r["detail"] is None for r in results)
    assert summary == {"type": "summary", "dry_run": False, "targets": 2, "rotated": 2,
                       "outcomes": {"completed": 2}, "not_rotated": [], "exit_code": 0}
    assert '"event"' in done.stderr                    # the logs went to stderr

    events = _audit(world, "--rotation", rotation_of["a"])
    assert events and {e["rotation_id"] for e in events} == {rotation_of["a"]}
    started = [e for e in events if e["action"] == "started"]
    assert [e["actor"] for e in started] == [whoami_actor()]   # from the chained event
    assert all(e["actor"] is None for e in events if e["action"] != "started")
    assert all(datetime.fromisoformat(e["at"]).utcoffset() is not None for e in events)
    assert {"id", "at", "target", "step", "kind", "action", "result", "key_id",
            "chain_seq", "chain_hash"} <= set(events[0])


def test_audit_filters_and_a_bad_trigger_is_a_usage_error(make_world: MakeWorld) -> None:
    world = make_world("app", grace="0s")
    assert world.cli("rotate", "app").returncode == 0
    everything = _audit(world)
    assert everything and _audit(world, "--trigger", "manual") == everything
    assert _audit(world, "--trigger", "schedule", "--trigger", "run_rotate") == []
    assert _audit(world, "--until", "1d") == []              # all of it is newer
    assert _audit(world, "--since", "1d", "--until", "2099-01-01") == everything
    assert _audit(world, "--rotation", "rot_none") == []

    bad = world.cli("audit", "--trigger", "cron")
    assert bad.returncode == 2
    assert re.search(r"argument --trigger: invalid choice: 'cron'", bad.stderr), bad.stderr
    backwards = world.cli("audit", "--since", "1h", "--until", "2h")
    assert backwards.returncode == 2
    assert "--until is before --since" in backwards.stderr
    code, export = world.cli_here("audit", "export", "--trigger", "manual",
                                  "--until", "2099-01-01")
    assert code == 0 and len(export.splitlines()) == len(everything)


def _visible(out: str) -> list[str]:
    """The lines a terminal shows: colours and carriage returns taken away."""
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out).replace("\r", "")
    return [line for line in plain.split("\n") if line.strip()]


# Nothing here is about SQL: one database is enough.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_tables_fit_the_terminal_and_piped_ones_are_plain_and_uncut(
        make_world: MakeWorld) -> None:
    world = make_world("app", grace="0s")
    reason = "SEC-42: the key was pasted into a CI log; rotated at once, consumers warned"
    assert world.cli("rotate", "app", "--reason", reason).returncode == 0
    [rotation] = world.rotations("app")
    env = {k: v for k, v in world.env.items() if k not in ("COLUMNS", "LINES")}

    code, out = on_a_pty(world.cli_args("--log-level", "error", "audit"), env, 60,
                         columns=160)
    assert code == 0, out
    shown = _visible(out)
    assert max(len(line) for line in shown) <= 160, shown
    assert shown[0].split()[:3] == ["AT", "TARGET", "ROTATION_ID"], shown
    assert set(shown[1].strip()) == {"─"}, shown          # rich's rule under the header
    # The ids stay whole, to be copied (the detail is what wraps).
    assert sum(rotation.rotation_id in line for line in shown) == len(_audit(world))
    code, out = on_a_pty(world.cli_args("--log-level", "error", "status"), env, 60, columns=60)
    assert code == 0, out
    assert max(len(line) for line in _visible(out)) <= 60, out

    piped = world.cli("audit")
    assert piped.returncode == 0, piped.stderr[-2000:]
    header, *rows = piped.stdout.splitlines()
    assert header.split()[:3] == ["AT", "TARGET", "ROTATION_ID"]
    assert len(rows) == len(_audit(world))                     # one row a line
    assert "\x1b[" not in piped.stdout and max(len(row) for row in rows) > 80
    started = next(row for row in rows if " started " in row)
    assert rotation.rotation_id in started                     # whole, not folded
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC  app ", started), started
