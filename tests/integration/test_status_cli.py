"""``rotator status`` during a real grace window: the key Vault serves (the new one), the
key retiring and its deadline, the rotation in flight, and the last ended result even
when it is a failure after the last completion.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from datetime import datetime

import pytest

from tests.integration.conftest import MakeWorld

pytestmark = pytest.mark.integration


def _row(stdout: str) -> str:
    [row] = [line for line in stdout.splitlines() if line.startswith("app ")]
    return row


def test_status_during_grace_shows_the_served_key_the_retiring_one_and_the_last_failure(
        make_world: MakeWorld) -> None:
    w = make_world("app", probe_timeout="300ms")
    assert w.cli_in_process("rotate", "app", "--grace", "0s").returncode == 0
    [first] = w.rotations("app")
    # A rotation that fails after that completion: its new key never authenticates.
    w.emulator.settings = dataclasses.replace(w.emulator.settings, propagation_delay=30.0)
    assert w.cli_in_process("rotate", "app", "--grace", "0s").returncode == 1
    w.emulator.settings = dataclasses.replace(w.emulator.settings, propagation_delay=0.0)
    failed = w.rotations("app")[-1]
    assert failed.status.value == "rolled_back"

    _, old_secret, _ = w.vault_secret("app")
    proc = subprocess.Popen(w.cli_args("rotate", "app", "--grace", "10s"), env=w.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        new_secret = w.wait_for_new_secret("app", old_secret)
        # Both answers at once, within the grace window on a loaded machine too.
        as_json = subprocess.Popen(w.cli_args("status", "-o", "json"), env=w.env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        during = w.cli_in_process("status")
        in_flight = w.rotations("app")[-1]
        json_out, json_err = as_json.communicate(timeout=60)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert in_flight.step.value == "grace" and in_flight.grace_ends_at is not None
    served = w.whoami(new_secret).json()["result"]["key_id"]
    assert served == in_flight.new_key_id != first.new_key_id

    assert during.returncode == 0, during.stderr
    assert re.match(r"TARGET\s+CURRENT KEY\s+AGE\s+RETIRING\s+IN FLIGHT\s+LAST RESULT",
                    during.stdout), during.stdout
    until = in_flight.grace_ends_at.strftime("%Y-%m-%d %H:%M:%S UTC")   # with its zone
    assert re.match(
        rf"app\s+{served}\s+\d+s\s+{first.new_key_id} until {until}\s+"
        rf"{in_flight.rotation_id} \(grace\)\s+rolled_back \S+ \S+ UTC: ",
        _row(during.stdout)), during.stdout
    assert new_secret not in during.stdout and old_secret not in during.stdout

    # The same answer for a program: stdout is JSON alone (the logs went to stderr).
    assert as_json.returncode == during.returncode, json_err
    [app] = json.loads(json_out)["targets"]
    assert (app["target"], app["current_key_id"], app["retiring_key_id"]) == (
        "app", served, first.new_key_id)
    assert datetime.fromisoformat(app["retiring_until"]) == in_flight.grace_ends_at
    assert app["retiring_until"].endswith("+00:00") and app["key_age_seconds"] >= 0
    assert app["in_flight"]["rotation_id"] == in_flight.rotation_id
    assert (app["in_flight"]["step"], app["in_flight"]["trigger"]) == ("grace", "manual")
    assert (app["last"]["rotation_id"], app["last"]["result"]) == (
        failed.rotation_id, "rolled_back")
    assert app["pending_cleanups"] == 0 and app["revoked_keys_alive"] == []
    assert new_secret not in json_out and old_secret not in json_out

    after = w.cli_in_process("status")
    assert after.returncode == 0, after.stderr
    assert re.match(rf"app\s+{served}\s+\d+s\s+-\s+-\s+completed ", _row(after.stdout)), (
        after.stdout)
