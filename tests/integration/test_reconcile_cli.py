"""``rotator reconcile`` through the real command: stray keys found, ``--fix`` deletes them
audited, and never the key Vault serves, a key in its grace window, or anything of a
target whose Vault could not be read; work of a target no longer in the config is
reported by ``status``, ``verify`` and ``reconcile`` (finished by ``run``:
test_orphans.py).
"""

from __future__ import annotations

import time

import pytest

from rotator.core.vocabulary import AuditAction, EventKind
from tests.integration.audit_doc import query_rows, sql_blocks
from tests.integration.conftest import MakeWorld
from tests.integration.test_orphans import said_everywhere
from tests.integration.world import World

pytestmark = pytest.mark.integration

# The world's lease_ttl: how long the lease of a process killed mid-rotation lives on.
_LEASE_TTL = 1.0


def _parked_in_grace(world: World, name: str) -> None:
    """A rotation of ``name`` killed in its grace window (an hour long), its lease lapsed."""
    killed = world.cli("rotate", name, "--grace", "1h", crash_at="step:grace")
    assert killed.returncode == -9, killed.stderr[-2000:]
    time.sleep(_LEASE_TTL + 0.2)


def _secrets(world: World) -> list[str]:
    return [*world.emulator.state.issued_secrets(), world.admin.secret, world.vault_token]


def test_a_stray_key_is_found_fixed_and_audited_and_orphans_are_reported(
        make_world: MakeWorld) -> None:
    world = make_world("app", "other", grace="0s")
    assert world.cli_here("rotate", "app")[0] == 0
    _parked_in_grace(world, "other")
    account = world.accounts["app"].account_id
    stray = world.emulator.state.create_key(account, "made-by-hand", key_limit=5)
    assert world.whoami(stray.secret).status_code == 200      # it has been used

    found = world.cli_in_process("reconcile")
    assert found.returncode == 1, found.stdout + found.stderr[-2000:]
    [row] = [line for line in found.stdout.splitlines() if stray.key_id in line]
    assert row.split()[:4] == ["app", account, stray.key_id, "made-by-hand"]
    assert "found" in row and "never" not in row
    assert found.stdout.rstrip().endswith(
        "1 stray key(s) in 2 target(s) (rotator reconcile --fix deletes them)")
    assert stray.key_id in world.live_key_ids("app")           # listing deletes nothing

    fixed = world.cli_in_process("reconcile", "--fix")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr[-2000:]
    assert "1 stray key(s) in 2 target(s): 1 deleted, 0 left" in fixed.stdout
    served = world.whoami(world.vault_secret("app")[1]).json()["result"]["key_id"]
    assert world.live_key_ids("app") == {served}
    parked = world.rotations("other")[-1]
    assert world.live_key_ids("other") == {parked.old_key_id, parked.new_key_id}

    repo = world.repository()
    try:
        rows = [e for e in repo.events(target="app") if e.action == AuditAction.DELETE_STRAY]
    finally:
        repo.engine.dispose()
    assert [(e.kind, e.key_id) for e in rows] == [(EventKind.INTENT, stray.key_id),
                                                  (EventKind.OUTCOME, stray.key_id)]
    assert rows[0].rotation_id == rows[1].rotation_id and rows[0].rotation_id.startswith("rec_")
    assert "rotator reconcile --fix by " in (rows[0].detail or "")
    assert "'made-by-hand'" in (rows[0].detail or "") and rows[1].result == "ok"
    # The auditor's query in docs/audit.md finds the deletion, who asked and the outcome.
    [doc_query] = [b for b in sql_blocks() if "delete_stray" in b]
    [found_row] = query_rows(world, doc_query)
    assert (found_row.target, found_row.key_id, found_row.result) == ("app", stray.key_id, "ok")
    assert found_row.run_id == rows[0].rotation_id and found_row.detail == rows[0].detail
    assert world.cli_here("reconcile")[0] == 0               # nothing left to do

    # "other" leaves the config with its rotation in flight: an orphan, said everywhere,
    # and finished by the next run (its row names its provider and Vault path).
    text = world.config_path.read_text()
    world.config_path.write_text(text[: text.index("\n[targets.other]")] + "\n")
    status = world.cli_in_process("status")
    assert status.returncode == 0, status.stderr[-2000:]
    verify, reconciled = world.cli_here("verify"), world.cli_here("reconcile")
    assert verify[0] == 1 and reconciled[0] == 1
    said_everywhere((status.stdout, verify[1], reconciled[1]), "other", parked.rotation_id,
                    "target 'other' is no longer in the config",
                    "is finished by the next `rotator run --once`",
                    f"Vault {world.mount}/count/other (field api_key)")
    assert world.cli_here("verify", "app")[0] == 0           # a target list narrows it
    output = "".join(r.stdout + r.stderr for r in (found, fixed, status)) + verify[1] \
        + reconciled[1]
    assert not [s for s in _secrets(world) if s in output]


def test_the_key_vault_serves_and_the_key_in_grace_are_never_deleted(
        make_world: MakeWorld) -> None:
    world = make_world("app")
    _parked_in_grace(world, "app")
    parked = world.rotations("app")[-1]
    stray = world.emulator.state.create_key(world.accounts["app"].account_id, "left-over",
                                            key_limit=5)

    fixed = world.cli_in_process("reconcile", "--fix")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr[-2000:]
    assert [line.split()[2] for line in fixed.stdout.splitlines()
            if " deleted" in line and line.startswith("app ")] == [stray.key_id]
    assert world.live_key_ids("app") == {parked.old_key_id, parked.new_key_id}

    # status says how long the rotation has sat in grace, and until when.
    status = world.cli_in_process("status")
    [row] = [line for line in status.stdout.splitlines()
             if line.startswith(parked.rotation_id)]
    assert parked.grace_ends_at is not None
    assert "app" in row and "grace" in row
    assert f"waiting for the grace window to end at {parked.grace_ends_at:%Y-%m-%d %H:%M:%S}" \
        in row

    # Cancelling it now would delete a key consumers may read: refused, nothing changed.
    refused = world.cli_in_process("cancel", "app", "--reason", "changed my mind")
    assert refused.returncode == 5, refused.stdout + refused.stderr[-2000:]
    assert "not cancelled" in refused.stderr and "let it finish" in refused.stderr
    assert world.rotations("app")[-1] == parked
    assert world.live_key_ids("app") == {parked.old_key_id, parked.new_key_id}
    repo = world.repository()
    try:
        [note] = [e for e in repo.events(target="app") if e.action == AuditAction.CANCEL]
    finally:
        repo.engine.dispose()
    assert note.result == "refused" and "changed my mind" in (note.detail or "")


def test_a_wrong_vault_token_could_not_check_and_deletes_nothing(
        make_world: MakeWorld) -> None:
    world = make_world("app", grace="0s")
    assert world.cli_here("rotate", "app")[0] == 0
    stray = world.emulator.state.create_key(world.accounts["app"].account_id, "by-hand",
                                            key_limit=5)
    before = world.live_key_ids("app")

    result = world.cli_in_process("reconcile", "--fix", env={"IT_VAULT_TOKEN": "hvs.not-a-token"})
    assert result.returncode == 3, result.stdout + result.stderr[-2000:]
    assert stray.key_id not in result.stdout
    [row] = [line for line in result.stdout.splitlines() if line.startswith("app ")]
    assert "could not read Vault's current key" in row and "status=403" in row
    assert result.stdout.rstrip().endswith(
        "0 stray key(s) in 1 target(s): 0 deleted, 0 left; 1 target(s) could not be "
        "checked: nothing of them was called stray or deleted")
    assert world.live_key_ids("app") == before
    assert "hvs.not-a-token" not in result.stdout + result.stderr


def test_a_key_another_target_of_the_account_serves_is_not_stray_to_the_one_named(
        make_world: MakeWorld) -> None:
    world = make_world("app", "twin")
    account = world.accounts["app"].account_id
    # "twin" rotates a second key of app's service account, at a Vault path of its own.
    twin_key = world.emulator.state.create_key(account, "twin's", key_limit=5)
    client = world.vault()
    try:
        client.secrets.kv.v2.create_or_update_secret(
            path="count/twin", secret={"api_key": twin_key.secret}, mount_point=world.mount)
    finally:
        client.adapter.close()
    text = world.config_path.read_text()
    world.config_path.write_text(text.replace(world.accounts["twin"].account_id, account))
    stray = world.emulator.state.create_key(account, "by-hand", key_limit=5)

    fixed = world.cli_in_process("reconcile", "app", "--fix")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr[-2000:]
    assert "1 stray key(s) in 1 target(s): 1 deleted, 0 left" in fixed.stdout
    assert world.live_key_ids("app") == {world.accounts["app"].key_id, twin_key.key_id}
    assert stray.key_id not in world.live_key_ids("app")
