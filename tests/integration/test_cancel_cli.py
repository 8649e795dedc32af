"""``rotator cancel`` through the real command: a rotation parked mid-way rolls back (its
new key deleted, the old one untouched and still in Vault), with who and why in the
audit; a target a live process holds (mid-step) is refused, naming the holder.

(A cancel refused because the new key is already in Vault is in test_reconcile_cli.py,
on the rotation parked in grace there.)
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from rotator.core.vocabulary import AuditAction
from tests.integration.conftest import MakeWorld
from tests.support import wait_stopped

pytestmark = pytest.mark.integration


def test_a_rotation_parked_after_its_create_is_rolled_back_and_audited(
        make_world: MakeWorld) -> None:
    world = make_world("app")
    version, secret, _ = world.vault_secret("app")
    old_key = world.whoami(secret).json()["result"]["key_id"]
    killed = world.cli("rotate", "app", crash_at="create_key:after")
    assert killed.returncode == -9, killed.stderr[-2000:]
    new_keys = world.live_key_ids("app") - {old_key}
    assert len(new_keys) == 1                   # made, its secret gone with the process
    time.sleep(1.2)                             # the killed process's lease lapses

    result = world.cli_in_process("cancel", "app", "--reason", "stuck on a provider outage")
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    [rot] = world.rotations("app")
    assert rot.status.value == "rolled_back"
    assert f"app: rotation {rot.rotation_id} cancelled: rolled_back" in result.stdout
    assert world.live_key_ids("app") == {old_key}
    assert world.vault_secret("app")[:2] == (version, secret)

    repo = world.repository()
    try:
        events = repo.events(target="app")
    finally:
        repo.engine.dispose()
    [note] = [e for e in events if e.action == AuditAction.CANCEL]
    assert note.result == "ok" and note.step == "create"
    assert "cancel asked by " in (note.detail or "")
    assert "stuck on a provider outage" in (note.detail or "")
    deleted = [e for e in events if e.action == AuditAction.DELETE_KEY and e.result == "ok"]
    assert [e.key_id for e in deleted] == list(new_keys)
    assert "cancelled by " in (events[-1].detail or "")
    assert events[-1].action == AuditAction.ROLLED_BACK
    verify = world.cli_in_process("verify")
    assert verify.returncode == 0, verify.stdout
    assert world.cli_in_process("cancel", "app", "--reason", "again").returncode == 5


def test_a_cancel_while_a_live_process_holds_the_target_is_refused_naming_it(
        make_world: MakeWorld) -> None:
    world = make_world("app")
    # A lease that stays the paused holder's while the test looks.
    world.config_path.write_text(world.config_path.read_text().replace(
        'lease_ttl = "1s"', 'lease_ttl = "60s"'))
    holder = subprocess.Popen(
        world.cli_args("rotate", "app"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=world.env | {"ROTATOR_TEST_HOOKS": "1",
                                    "ROTATOR_TEST_PAUSE_AT": "step:verify"})
    try:
        wait_stopped(holder, 30)
        result = world.cli_in_process("cancel", "app", "--reason", "too slow")
    finally:
        holder.kill()
        holder.communicate()
    assert result.returncode == 3, result.stdout + result.stderr[-2000:]
    [rot] = world.rotations("app")
    assert rot.status.value == "running" and rot.step.value == "verify"
    assert re.search(rf"app: not cancelled: rotation {rot.rotation_id} at step verify "
                     rf"\(manual, by .*\) is being driven by another process; lease held by "
                     rf"\S+:{holder.pid}:", result.stderr), result.stderr
