"""`rotator rotate` on a terminal says what it waits for during a grace window (the
deadline, a countdown, that Ctrl-C is safe and the command that resumes); piped, it does
not draw that line."""

from __future__ import annotations

import re

import pytest

from tests.integration.conftest import MakeWorld
from tests.integration.terminal import on_a_pty

pytestmark = pytest.mark.integration


def test_on_a_terminal_rotate_counts_the_grace_window_down(make_world: MakeWorld) -> None:
    world = make_world("app", grace="4s")
    # The width is the pty's (COLUMNS, which a test runner may set, would override it).
    env = {k: v for k, v in world.env.items() if k not in ("COLUMNS", "LINES")}
    code, out = on_a_pty(world.cli_args("rotate", "app"), env, 90)
    assert code == 0, out
    countdown = re.findall(r"app: grace until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, (\d+)s left; "
                           r"Ctrl-C is safe, `rotator rotate app` resumes", out)
    assert len(countdown) >= 2, out                  # drawn again as the window runs
    assert int(countdown[0]) >= int(countdown[-1]), countdown
    assert re.search(r"app: completed, rotation rot_\S+, \d", out), out


def test_piped_rotate_draws_no_countdown(make_world: MakeWorld) -> None:
    world = make_world("app", grace="2s")
    done = world.cli("rotate", "app")
    assert done.returncode == 0, done.stderr
    assert "grace until" not in done.stdout + done.stderr
    assert re.search(r"app: completed, rotation rot_\S+, \d", done.stdout), done.stdout
