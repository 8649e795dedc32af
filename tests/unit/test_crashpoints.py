"""The crash and pause hooks are off unless a test turns them on explicitly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.support import process_state, wait_stopped

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
