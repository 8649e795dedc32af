"""A second ``rotate`` of a target whose rotation is in flight joins it: one rotation, one
key switch; and with a live process holding the target, exit 3 naming what is in flight.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from rotator.app.operations import whoami_actor
from tests.integration.conftest import MakeWorld
from tests.integration.world import World
from tests.support import wait_stopped

pytestmark = pytest.mark.integration


def _popen(w: World, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(w.cli_args(*args), env=env or w.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_line(proc: subprocess.Popen[str], path: Path, text: str) -> None:
    deadline = time.monotonic() + 30
    while text not in path.read_text():
        assert proc.poll() is None, f"exited ({proc.returncode}):\n{path.read_text()}"
        assert time.monotonic() < deadline, path.read_text()
        time.sleep(0.05)


def test_a_second_rotate_during_grace_joins_the_first(make_world: MakeWorld) -> None:
    w = make_world("app", grace="8s")
    version, old_secret, _ = w.vault_secret("app")
    first = _popen(w, "rotate", "app")
    try:
        w.wait_for_new_secret("app", old_secret)        # the first is in its grace window
        second = w.cli("rotate", "app")
        out, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 0, err
    assert second.returncode == 0, second.stderr
    [rotation] = w.rotations("app")
    rid = rotation.rotation_id
    assert re.search(rf"joined rotation {rid} at step grace \(manual, by "
                     rf"{re.escape(whoami_actor())}, started ", second.stderr), second.stderr
    assert re.search(rf"app: completed \(joined\), rotation {rid},", second.stdout), second.stdout
    assert re.search(rf"app: completed, rotation {rid},", out), out
    # One key switch: Vault moved once, and one key was created.
    assert w.vault_secret("app")[0] == version + 1
    assert len(w.live_key_ids("app")) == 1
    w.assert_invariants("app")


def test_a_target_held_by_a_live_process_exits_3_naming_it(make_world: MakeWorld) -> None:
    w = make_world("app", grace="0s")
    # A lease that stays the paused holder's while the test looks.
    w.config_path.write_text(w.config_path.read_text().replace(
        'lease_ttl = "1s"', 'lease_ttl = "60s"'))
    holder = _popen(w, "rotate", "app", env=w.env | {
        "ROTATOR_TEST_HOOKS": "1", "ROTATOR_TEST_PAUSE_AT": "step:verify"})
    waiting: subprocess.Popen[str] | None = None
    try:
        wait_stopped(holder, 30)
        [rotation] = w.rotations("app")
        held = w.cli("rotate", "app")
        assert held.returncode == 3, (held.returncode, held.stdout, held.stderr)
        assert re.search(
            rf"app: lease_held, rotation {rotation.rotation_id}, \S+: "
            rf"rotation {rotation.rotation_id} "
            rf"at step verify \(manual, by {re.escape(whoami_actor())}, started .*\) is "
            rf"being driven by another process; lease held by \S+:{holder.pid}:", held.stdout
        ), held.stdout
        # --wait-lease waits for the holder, then takes its rotation's result: no second one.
        waiting_log = w.config_path.parent / "waiting.log"
        with waiting_log.open("w") as log:
            waiting = subprocess.Popen(w.cli_args("rotate", "app", "--wait-lease", "60s"),
                                       env=w.env, stdout=subprocess.PIPE, stderr=log,
                                       text=True)
        _wait_for_line(waiting, waiting_log, '"lease_waiting"')
        holder.send_signal(signal.SIGCONT)
        _, err = holder.communicate(timeout=60)
        assert holder.returncode == 0, err
        waited_out, _ = waiting.communicate(timeout=60)
        waited_err = waiting_log.read_text()
    finally:
        for proc in (holder, waiting):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert waiting is not None and waiting.returncode == 0, waited_err
    assert re.search(rf"app: completed \(joined\), rotation {rotation.rotation_id},", waited_out)
    assert f"joined rotation {rotation.rotation_id}" in waited_err, waited_err
    assert [r.rotation_id for r in w.rotations("app")] == [rotation.rotation_id]
    w.assert_invariants("app")
