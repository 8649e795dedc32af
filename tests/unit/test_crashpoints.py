"""The crash hook is off unless a test turns it on explicitly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROGRAM = ("from rotator.engine.crashpoints import crash_point; "
           "crash_point('vault_write:after'); print('alive')")


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ROTATOR_TEST_")}
    return subprocess.run([sys.executable, "-c", PROGRAM], env={**clean, **env},
                          capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize("env", [
    {"ROTATOR_TEST_CRASH_AT": "vault_write:after"},                        # hooks not enabled
    {"ROTATOR_TEST_HOOKS": "true", "ROTATOR_TEST_CRASH_AT": "vault_write:after"},  # not "1"
    {"ROTATOR_TEST_HOOKS": "1", "ROTATOR_TEST_CRASH_AT": "vault_write:before"},    # elsewhere
])
def test_no_crash_without_the_exact_switch_and_point(env: dict[str, str]) -> None:
    result = _run(env)
    assert result.returncode == 0 and result.stdout.strip() == "alive"


def test_the_hook_kills_the_process_at_its_point() -> None:
    result = _run({"ROTATOR_TEST_HOOKS": "1", "ROTATOR_TEST_CRASH_AT": "vault_write:after"})
    assert result.returncode == -9 and "alive" not in result.stdout
