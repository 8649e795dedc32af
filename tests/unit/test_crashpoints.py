"""The crash and pause hooks are off unless a test turns them on explicitly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from rotator.core.model import Step
from rotator.core.vocabulary import AuditAction
from rotator.engine import audit_trail, crashpoints
from rotator.engine.audit_trail import AuditTrail, EffectResult
from rotator.engine.crashpoints import Moment, crash_point, effect_point, fail_point, step_point
from tests.support import process_state, wait_stopped
from tests.unit.test_unwind import RID, Bench

PROGRAM = ("from rotator.engine.crashpoints import crash_point; "
           "crash_point('vault_write:after'); print('alive')")

# Reaches the point twice: a pause point stops the process the first time only.
TWICE = ("from rotator.engine.crashpoints import crash_point; "
         "print('reached', flush=True); crash_point('vault_write:after'); "
         "print('resumed', flush=True); crash_point('vault_write:after'); print('alive')")


def _clean_env(env: dict[str, str]) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("ROTATOR_TEST_")},
            **env}


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROGRAM], env=_clean_env(env),
                          capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize("env", [
    {"ROTATOR_TEST_CRASH_AT": "vault_write:after"},                        # hooks not enabled
    {"ROTATOR_TEST_HOOKS": "true", "ROTATOR_TEST_CRASH_AT": "vault_write:after"},  # not "1"
    {"ROTATOR_TEST_HOOKS": "1", "ROTATOR_TEST_CRASH_AT": "vault_write:before"},    # elsewhere
    {"ROTATOR_TEST_PAUSE_AT": "vault_write:after"},
    {"ROTATOR_TEST_HOOKS": "true", "ROTATOR_TEST_PAUSE_AT": "vault_write:after"},
    {"ROTATOR_TEST_HOOKS": "1", "ROTATOR_TEST_PAUSE_AT": "vault_write:before"},
])
def test_no_crash_or_pause_without_the_exact_switch_and_point(env: dict[str, str]) -> None:
    result = _run(env)
    assert result.returncode == 0 and result.stdout.strip() == "alive"


def test_the_hook_kills_the_process_at_its_point() -> None:
    result = _run({"ROTATOR_TEST_HOOKS": "1", "ROTATOR_TEST_CRASH_AT": "vault_write:after"})
    assert result.returncode == -9 and "alive" not in result.stdout


def test_the_pause_hook_stops_the_process_at_its_point_once() -> None:
    env = _clean_env({"ROTATOR_TEST_HOOKS": "1", "ROTATOR_TEST_PAUSE_AT": "vault_write:after"})
    proc = subprocess.Popen([sys.executable, "-c", TWICE], env=env, stdout=subprocess.PIPE,
                            text=True)
    try:
        wait_stopped(proc, 30)
        assert proc.stdout is not None
        assert proc.stdout.readline() == "reached\n"    # stopped at the point, not before
        assert process_state(proc.pid) == "T"
        proc.send_signal(signal.SIGCONT)
        out, _ = proc.communicate(timeout=30)           # not stopped a second time
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and out.split() == ["resumed", "alive"]


# -- in process: the same switches, with the kill and the stop observed instead of made ----
# mutmut credits a test only with the code it runs in its own process, so these pin, call
# by call, what the subprocess tests above see the process do.
POINT = "vault_write:after"
HOOK_VARS = ("ROTATOR_TEST_HOOKS", "ROTATOR_TEST_CRASH_AT", "ROTATOR_TEST_PAUSE_AT",
             "ROTATOR_TEST_FAIL_AT")


@pytest.fixture()
def signals(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, int]]:
    """Every kill and stop the hooks ask for, as (call, target, signal); none is sent."""
    sent: list[tuple[str, int, int]] = []
    for name in HOOK_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append(("kill", pid, sig)))
    monkeypatch.setattr(signal, "pthread_kill",
                        lambda ident, sig: sent.append(("pthread_kill", ident, sig)))
    monkeypatch.setattr(crashpoints, "_paused", threading.Lock())   # no earlier pause
    return sent


@pytest.mark.parametrize("env", [
    {"ROTATOR_TEST_CRASH_AT": POINT},
    {"ROTATOR_TEST_HOOKS": "true", "ROTATOR_TEST_CRASH_AT": POINT},
    {"ROTATOR_TEST_HOOKS": "1", "ROTATOR_TEST_CRASH_AT": "vault_write:before"},
    {"ROTATOR_TEST_PAUSE_AT": POINT},
    {"ROTATOR_TEST_HOOKS": "true", "ROTATOR_TEST_PAUSE_AT": POINT},
    {"ROTATOR_TEST_HOOKS": "1", "ROTATOR_TEST_PAUSE_AT": "vault_write:before"},
    {"ROTATOR_TEST_HOOKS": "1"},
])
def test_crash_point_sends_nothing_without_the_exact_switch_and_point(
        signals: list[tuple[str, int, int]], monkeypatch: pytest.MonkeyPatch,
        env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    crash_point(POINT)
    assert signals == []


def test_crash_point_sigkills_its_own_process(signals: list[tuple[str, int, int]],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROTATOR_TEST_HOOKS", "1")
    monkeypatch.setenv("ROTATOR_TEST_CRASH_AT", POINT)
    crash_point(POINT)
    assert signals == [("kill", os.getpid(), signal.SIGKILL)]


def test_pause_point_sigstops_the_calling_thread_the_first_time_only(
        signals: list[tuple[str, int, int]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROTATOR_TEST_HOOKS", "1")
    monkeypatch.setenv("ROTATOR_TEST_PAUSE_AT", POINT)
    crash_point(POINT)
    crash_point(POINT)
    assert signals == [("pthread_kill", threading.get_ident(), signal.SIGSTOP)]


def test_a_pause_freezes_holding_every_guard_and_lets_go_when_thawed(
        signals: list[tuple[str, int, int]], monkeypatch: pytest.MonkeyPatch) -> None:
    """A guard is held across the stop (no other thread inside it while frozen) and released
    after; guards are taken only with the hooks on."""
    writes = threading.Lock()
    held_while_stopped: list[bool] = []
    monkeypatch.setattr(crashpoints, "_pause_guards", [])
    monkeypatch.setattr(signal, "pthread_kill",
                        lambda ident, sig: held_while_stopped.append(writes.locked()))
    crashpoints.guard_pauses(writes)            # hooks off: not kept
    assert crashpoints._pause_guards == []
    monkeypatch.setenv("ROTATOR_TEST_HOOKS", "1")
    monkeypatch.setenv("ROTATOR_TEST_PAUSE_AT", POINT)
    crashpoints.guard_pauses(writes)
    crash_point(POINT)
    assert held_while_stopped == [True]
    assert not writes.locked()


def test_fail_point_raises_the_given_error_naming_the_point_and_the_switch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in HOOK_VARS:
        monkeypatch.delenv(name, raising=False)
    fail_point("read_back", ValueError)                 # hooks off: nothing
    monkeypatch.setenv("ROTATOR_TEST_FAIL_AT", "read_back")
    fail_point("read_back", ValueError)
    monkeypatch.setenv("ROTATOR_TEST_HOOKS", "true")
    fail_point("read_back", ValueError)
    monkeypatch.setenv("ROTATOR_TEST_HOOKS", "1")
    fail_point("vault_write:before", ValueError)        # another point: nothing
    with pytest.raises(ValueError) as raised:
        fail_point("read_back", ValueError)
    assert str(raised.value) == "injected failure at read_back (ROTATOR_TEST_FAIL_AT)"


def test_point_names_are_built_from_the_vocabulary() -> None:
    assert effect_point(AuditAction.VAULT_WRITE, Moment.AFTER) == "vault_write:after"
    assert effect_point(AuditAction.DELETE_KEY, Moment.BEFORE) == "delete_key:before"
    assert step_point(Step.REVOKE) == "step:revoke"


def test_a_side_effect_passes_its_before_and_after_points_around_the_call(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Intent row, ``<action>:before``, lease confirmed, the call, outcome row, ``:after``."""
    b = Bench()
    rot = b.rotation(Step.STORE)
    seen: list[str] = []
    monkeypatch.setattr(audit_trail, "crash_point",
                        lambda name: seen.append(f"{name} after {len(b.w.repo.recorded)} rows"))
    trail = AuditTrail(b.w.repo, b.w.clock, b.lease, lambda: seen.append("confirm"))

    def call() -> int:
        seen.append("call")
        return 7

    got = trail.side_effect(rot, AuditAction.VAULT_WRITE, call,
                            lambda v: EffectResult(vault_version=v))
    assert got == 7
    assert seen == ["vault_write:before after 1 rows", "confirm", "call",
                    "vault_write:after after 2 rows"]
    assert [e.rotation_id for e in b.w.repo.recorded] == [RID, RID]
