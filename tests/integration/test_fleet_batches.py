"""Batches larger than the workers: ``run --once`` and ``rotate --all --concurrency N``
rotate every target, not the first batch, and say so in their exit code and output.

Real CLI processes against the emulator, OpenBao and SQLite/PostgreSQL; grace 0 and a
handful of targets keep each case to a few seconds.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from rotator.core.model import Status, Step
from tests.integration.conftest import MakeWorld
from tests.integration.daemon_process import Daemon, daemon_config, wait_for
from tests.integration.proxy import CuttableProxy
from tests.integration.world import World

pytestmark = pytest.mark.integration


def _completed(world: World, target: str) -> int:
    return sum(r.status is Status.COMPLETED for r in world.rotations(target))


def _drop_vault_secret(world: World, name: str) -> None:
    """The target's Vault path gone: its rotation refuses at plan, before any key exists."""
    client = world.vault()
    try:
        client.secrets.kv.v2.delete_metadata_and_all_versions(path=f"count/{name}",
                                                              mount_point=world.mount)
    finally:
        client.adapter.close()


def _run_once(world: World, *, workers: int, name: str = "once") -> int:
    """``rotator run --once`` to its end: its exit code. Its log is printed, which pytest
    shows when the test fails."""
    daemon = Daemon(world, *daemon_config(world, name, workers=workers), "--once", name=name)
    try:
        return daemon.wait(60)
    finally:
        daemon.close()
        print(daemon.logs()[-3000:])


def test_once_rotates_every_due_target_with_fewer_workers_than_targets(
        make_world: MakeWorld) -> None:
    names = tuple(f"t{i}" for i in range(7))
    world = make_world(*names, grace="0s")
    assert _run_once(world, workers=2) == 0
    for name in names:
        assert [(r.trigger, r.status) for r in world.rotations(name)] == [
            ("first_rotation", Status.COMPLETED)], name
        world.assert_invariants(name)


def test_once_exits_1_when_one_target_fails_and_still_rotates_the_others(
        make_world: MakeWorld) -> None:
    names = ("a", "b", "c", "d")
    world = make_world(*names, grace="0s")
    _drop_vault_secret(world, "b")
    assert _run_once(world, workers=2) == 1
    assert _completed(world, "b") == 0
    for name in ("a", "c", "d"):
        assert _completed(world, name) == 1, name
        world.assert_invariants(name)


def test_sigterm_during_a_once_batch_exits_1_and_the_next_run_finishes_it(
        make_world: MakeWorld) -> None:
    names = ("a", "b", "c", "d")
    world = make_world(*names, grace="0s")
    # Slow calls: one worker takes seconds per target, so the signal lands mid-batch.
    world.emulator.settings = dataclasses.replace(world.emulator.settings, latency=0.15)
    config, port = daemon_config(world, "once", workers=1)
    first = Daemon(world, config, port, "--once", name="first")
    try:
        wait_for(lambda: bool(world.rotations("a")), 30, "the first rotation to start")
        code, took = first.terminate()
    finally:
        first.close()
    assert code == 1 and took < 5, (code, took, first.logs()[-3000:])
    assert '"event": "once_interrupted"' in first.logs()
    started = {name: world.rotations(name) for name in names}
    assert not started["d"], "the batch was over before the signal: nothing was tested"
    in_flight = [rot.rotation_id for rots in started.values() for rot in rots
                 if rot.status is Status.RUNNING]
    assert in_flight, "the signal parked no rotation: nothing was in flight to resume"
    world.emulator.settings = dataclasses.replace(world.emulator.settings, latency=0.0)
    assert _run_once(world, workers=1, name="second") == 0
    for name in names:
        (rot,) = world.rotations(name)
        assert rot.status is Status.COMPLETED, name
        world.assert_invariants(name)
    finished = {r.rotation_id for name in names for r in world.rotations(name)}
    assert set(in_flight) <= finished          # resumed, not replaced by a new rotation


_PROGRESS = re.compile(r"^(?P<target>\S+): (?P<result>\w+), rotation (?P<rotation>\S+), "
                       r"(?P<elapsed>\d+\.\ds)$")


def test_rotate_all_with_concurrency_prints_a_line_per_target_and_a_summary(
        make_world: MakeWorld) -> None:
    names = ("a", "b", "c", "d", "e")
    world = make_world(*names, grace="0s")
    _drop_vault_secret(world, "c")
    result = world.cli("rotate", "--all", "--concurrency", "3")
    assert result.returncode == 1, result.stderr[-3000:]
    # A refusal's progress line is followed by its next step, indented.
    next_steps = [line for line in result.stdout.splitlines() if line.startswith("  ")]
    lines = [line for line in result.stdout.splitlines() if not line.startswith("  ")]
    progress = lines[:len(names)]
    got = {}
    for line in progress:
        target = line.split(":", 1)[0]
        got[target] = line
    assert sorted(got) == list(names), result.stdout
    for name in ("a", "b", "d", "e"):
        match = _PROGRESS.match(got[name])
        assert match, got[name]
        (rot,) = world.rotations(name)
        assert match["result"] == "completed" and match["rotation"] == rot.rotation_id
        world.assert_invariants(name)
    (failed,) = world.rotations("c")
    assert failed.status is Status.FAILED
    assert got["c"].startswith(f"c: failed, rotation {failed.rotation_id}, "), got["c"]
    assert "no key in Vault" in got["c"]
    assert len(next_steps) == 1 and "bao kv put" in next_steps[0], next_steps
    assert lines[len(names):] == ["4 of 5 target(s) rotated (4 completed, 1 failed)",
                                  "not rotated: c (failed)"]


def test_rotate_concurrency_out_of_range_is_a_usage_error_naming_the_flag() -> None:
    for value in ("0", "65", "three"):
        result = subprocess.run(
            [sys.executable, "-m", "rotator", "rotate", "--all", "--concurrency", value],
            capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode == 2, (value, result.stderr)
        assert "--concurrency" in result.stderr and "1 to 64" in result.stderr, result.stderr


def test_rotate_with_concurrency_runs_targets_side_by_side(make_world: MakeWorld) -> None:
    world = make_world("a", "b", grace="0s")
    # Slow calls: each rotation takes a second or so, long enough to overlap for sure.
    world.emulator.settings = dataclasses.replace(world.emulator.settings, latency=0.1)
    result = world.cli("rotate", "a", "b", "--concurrency", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    (a,), (b,) = world.rotations("a"), world.rotations("b")
    assert a.finished_at is not None and b.finished_at is not None
    assert a.started_at < b.finished_at and b.started_at < a.finished_at, (a, b)


def test_ctrl_c_during_rotate_all_parks_what_runs_and_starts_nothing_more(
        make_world: MakeWorld) -> None:
    names = ("a", "b", "c", "d")
    world = make_world(*names, grace="0s")
    world.emulator.settings = dataclasses.replace(world.emulator.settings, latency=0.15)
    proc = subprocess.Popen(world.cli_args("rotate", "--all", "--concurrency", "2"),
                            env=world.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_for(lambda: bool(world.rotations("a")) and bool(world.rotations("b")), 30,
                 "the first two rotations to start")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 130, err[-3000:]
    assert "resumes on the next run" in err
    assert world.rotations("c") == [] and world.rotations("d") == [], out
    parked = {n: world.rotations(n)[0] for n in ("a", "b")}
    assert any(r.status is Status.RUNNING for r in parked.values()), parked
    world.emulator.settings = dataclasses.replace(world.emulator.settings, latency=0.0)
    again = world.cli("rotate", "--all", "--concurrency", "2")
    assert again.returncode == 0, again.stderr[-3000:]
    for name in names:
        (rot,) = world.rotations(name)
        assert rot.status is Status.COMPLETED, name
        world.assert_invariants(name)
    for name, rot in parked.items():
        if rot.status is Status.RUNNING:
            assert f"{name}: completed (joined), rotation {rot.rotation_id}," in again.stdout


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_once_started_while_the_database_is_down_waits_for_it_then_rotates_all(
        make_world: MakeWorld, migrated_url: str) -> None:
    names = ("a", "b", "c")
    world = make_world(*names, grace="0s")
    pg_port = make_url(migrated_url).port or 5432
    db_proxy = CuttableProxy(pg_port)
    config, port = daemon_config(world, "once", workers=2, replace={
        f"@127.0.0.1:{pg_port}/": f"@127.0.0.1:{db_proxy.port}/"})
    db_proxy.cut()
    daemon = Daemon(world, config, port, "--once")
    try:
        wait_for(lambda: '"event": "database_unreachable"' in daemon.logs(), 30,
                 "the daemon to find the database down")
        time.sleep(0.5)                      # a few polls (200ms) with the database down
        assert daemon.proc.poll() is None, daemon.logs()[-3000:]   # not "nothing was due"
        db_proxy.restore()
        assert daemon.wait(60) == 0, daemon.logs()[-3000:]
    finally:
        daemon.close()
        db_proxy.close()
    for name in names:
        assert _completed(world, name) == 1, name
        world.assert_invariants(name)


def _cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) process ``pid`` has used so far."""
    # /proc/PID/stat: utime and stime are fields 14 and 15, in clock ticks; the name
    # (field 2, in parentheses) may hold spaces, so count from its closing parenthesis.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_rotate_waits_out_a_grace_window_without_spinning(make_world: MakeWorld) -> None:
    world = make_world("a", grace="4s")
    proc = subprocess.Popen(world.cli_args("rotate", "a"), env=world.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: any(r.step is Step.GRACE for r in world.rotations("a")), 30,
                 "the rotation to reach its grace window")
        before = _cpu_seconds(proc.pid)
        time.sleep(2)
        spent = _cpu_seconds(proc.pid) - before
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    # A loop spinning through the window burns a share of a core however loaded the
    # machine; waiting wakes once a second.
    assert spent < 0.3, spent
