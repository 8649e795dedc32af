"""Work of a target taken out of the config, on real servers: a rotation killed past its
store and a queued deletion are finished by the next ``rotator run --once`` as they began
(the provider and Vault path their rows recorded), and one killed before its store is
rolled back, Vault left as it was; none is rotated again. Work whose provider left the
config too stays reported by ``status``, ``verify`` and ``reconcile``, untouched.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterable

import pytest

from rotator.core.model import Rotation, Status
from rotator.core.vocabulary import AuditAction, EventKind, VaultMetadataKey
from tests.integration.conftest import MakeWorld
from tests.integration.test_pending_cleanup import _rotate_with_failing_deletes
from tests.integration.world import World

pytestmark = pytest.mark.integration

_LEASE_TTL = 1.0   # the world's: how long a killed process's lease lives on


def _drop_target(world: World, name: str) -> None:
    """Take ``[targets.<name>]`` out of the world's config, as an operator would."""
    text = world.config_path.read_text()
    block = re.compile(rf"\n\[targets\.{re.escape(name)}\]\n(?:(?!\n\[).)*", re.DOTALL)
    dropped, found = block.subn("", text)
    assert found == 1, text
    world.config_path.write_text(dropped)


def said_everywhere(outputs: Iterable[str], target: str, rotation_id: str,
                    *phrases: str) -> None:
    """Each of ``outputs`` (of status, verify, reconcile) has an orphan row of ``target``'s
    ``rotation_id``, and every phrase of its detail."""
    for stdout in outputs:
        assert re.search(rf"^orphan\s+{target}\s+{rotation_id}\s", stdout,
                         re.MULTILINE), stdout
        for phrase in phrases:
            assert phrase in stdout, (phrase, stdout)


def _orphan_events(stderr: str) -> list[dict[str, object]]:
    said = []
    for line in stderr.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "orphan_target":
            said.append(entry)
    return said


def _killed(world: World, crash_at: str) -> tuple[int, str, str, Rotation]:
    """``other``'s Vault version and secret, its key id, and its rotation SIGKILLed at
    ``crash_at``."""
    version, old_secret, _ = world.vault_secret("other")
    killed = world.cli("rotate", "other", crash_at=crash_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    [parked] = world.rotations("other")
    assert parked.status is Status.RUNNING
    return version, old_secret, world.key_id_of(old_secret), parked


def test_a_rotation_killed_mid_way_then_dropped_from_the_config_is_finished_by_run_once(
        make_world: MakeWorld) -> None:
    world = make_world("app", "other")
    # Killed right after its new key landed in Vault: the next run must reconcile that
    # write, hold the grace and revoke the old key, all at the path the row recorded.
    version, old_secret, old_key, parked = _killed(world, "vault_write:after")
    assert parked.provider == "count"
    assert parked.vault_ref is not None and parked.vault_ref.path == "count/other"
    _drop_target(world, "other")
    time.sleep(_LEASE_TTL + 0.2)

    status = world.cli_in_process("status")
    assert re.search(rf"^orphan\s+other\s+{parked.rotation_id}\s", status.stdout,
                     re.MULTILINE), status.stdout
    assert "is finished by the next `rotator run --once`" in status.stdout
    assert "put [targets.other] back" not in status.stdout
    [listed] = json.loads(world.cli_in_process("status", "-o", "json").stdout)["orphans"]
    assert (listed["target"], listed["rotation_id"], listed["step"],
            listed["finished_by_next_run"]) == ("other", parked.rotation_id, "store", True)

    run = world.cli("run", "--once")
    assert run.returncode == 0, run.stderr[-3000:]
    [said] = _orphan_events(run.stderr)
    assert (said["target"], said["rotation_id"], said["finished"]) == (
        "other", parked.rotation_id, True)
    [done] = world.rotations("other")
    assert done.rotation_id == parked.rotation_id and done.status is Status.COMPLETED
    new_version, served, meta = world.vault_secret("other")
    assert new_version > version and world.key_id_of(served) == done.new_key_id
    assert meta[VaultMetadataKey.ROTATION_ID] == done.rotation_id
    assert world.whoami(old_secret).status_code == 401
    assert old_key not in world.live_key_ids("other")
    world.assert_invariants("other")       # one live key, every intent with its outcome
    verify = world.cli_here("verify")
    assert verify[0] == 0, verify[1]

    again = world.cli("run", "--once")
    assert again.returncode == 0, again.stderr[-3000:]
    assert [r.rotation_id for r in world.rotations("other")] == [done.rotation_id]
    assert not _orphan_events(again.stderr)


def test_a_rotation_dropped_before_its_store_is_rolled_back_and_vault_left_as_it_was(
        make_world: MakeWorld) -> None:
    world = make_world("app", "other")
    # Killed right after its create: a new key at the provider, Vault never written.
    version, old_secret, old_key, parked = _killed(world, "create_key:after")
    assert parked.step.value == "create"
    [new_key] = world.live_key_ids("other") - {old_key}
    _drop_target(world, "other")
    time.sleep(_LEASE_TTL + 0.2)

    status = world.cli_in_process("status")
    assert "is rolled back by the next `rotator run --once`" in status.stdout, status.stdout

    run = world.cli("run", "--once")
    assert run.returncode == 0, run.stderr[-3000:]
    [said] = _orphan_events(run.stderr)
    assert said["finished"] is True
    [done] = world.rotations("other")
    assert done.rotation_id == parked.rotation_id and done.status is Status.ROLLED_BACK
    assert done.failure is not None and done.failure.code.value == "cancelled"
    assert "its target is no longer in the config" in (done.reason or "")
    assert world.live_key_ids("other") == {old_key}           # the new key deleted
    assert world.whoami(old_secret).status_code == 200        # the old one untouched
    assert world.vault_secret("other")[:2] == (version, old_secret)
    repo = world.repository()
    try:
        repo_events = repo.events(target="other")
        cancels = [e for e in repo_events if e.action == AuditAction.CANCEL]
    finally:
        repo.engine.dispose()
    assert [e.result for e in cancels] == ["ok"]
    deleted = [e for e in repo_events if e.action == AuditAction.DELETE_KEY
               and e.kind is EventKind.OUTCOME]
    assert [(e.key_id, e.result) for e in deleted] == [(new_key, "ok")]
    assert cancels[0].detail is not None and "cancel asked by scheduler" in cancels[0].detail
    world.assert_invariants("other")
    assert world.cli_here("verify")[0] == 0

    again = world.cli("run", "--once")
    assert again.returncode == 0, again.stderr[-3000:]
    assert [r.rotation_id for r in world.rotations("other")] == [done.rotation_id]


def test_a_queued_deletion_of_a_dropped_target_is_deleted_once_the_provider_answers(
        make_world: MakeWorld) -> None:
    world = make_world("app", "keep", grace="2s")
    _, old_secret, _ = world.vault_secret("app")
    rotating = _rotate_with_failing_deletes(world)
    assert rotating.returncode == 4, (rotating.stdout, rotating.stderr[-2000:])
    [rot] = world.rotations("app")
    assert world.whoami(old_secret).status_code == 200       # queued, alive
    repo = world.repository()
    try:
        [queued] = repo.all_pending_cleanups()
    finally:
        repo.engine.dispose()
    assert (queued.key_id, queued.provider) == (rot.old_key_id, "count")
    _drop_target(world, "app")

    reconciled = world.cli_here("reconcile")
    assert re.search(rf"^orphan\s+app\s+{rot.rotation_id}\s+{rot.old_key_id}\s",
                     reconciled[1], re.MULTILINE), reconciled[1]
    assert "deletes it with provider count" in reconciled[1]

    run = world.cli("run", "--once")
    assert run.returncode == 0, run.stderr[-3000:]
    assert world.whoami(old_secret).status_code == 401
    assert rot.old_key_id not in world.live_key_ids("app")
    assert world.settled()
    repo = world.repository()
    try:
        assert repo.all_pending_cleanups() == []
        cleanup = [e for e in repo.events(target="app") if e.action == AuditAction.CLEANUP_KEY]
    finally:
        repo.engine.dispose()
    assert [(e.kind, e.key_id, e.result) for e in cleanup] == [
        (EventKind.INTENT, rot.old_key_id, None), (EventKind.OUTCOME, rot.old_key_id, "ok")]
    assert [r.rotation_id for r in world.rotations("app")] == [rot.rotation_id]
    assert world.cli_here("verify")[0] == 0


def test_work_whose_provider_left_the_config_too_stays_reported_and_untouched(
        make_world: MakeWorld) -> None:
    world = make_world("app", "other")
    killed = world.cli("rotate", "other", "--grace", "1h", crash_at="step:grace")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    [parked] = world.rotations("other")
    _drop_target(world, "other")
    # The provider renamed: the row's "count" is no longer configured (app now uses it).
    text = world.config_path.read_text()
    world.config_path.write_text(text.replace("[providers.count", "[providers.count2")
                                 .replace('provider = "count"', 'provider = "count2"'))
    time.sleep(_LEASE_TTL + 0.2)

    status = world.cli_in_process("status")
    verify, reconciled = world.cli_here("verify"), world.cli_here("reconcile")
    assert verify[0] == 1 and reconciled[0] == 1
    said_everywhere((status.stdout, verify[1], reconciled[1]), "other", parked.rotation_id,
                    "its provider 'count' is no longer in the config",
                    "put [targets.other] back")
    [listed] = json.loads(world.cli_in_process("status", "-o", "json").stdout)["orphans"]
    assert (listed["rotation_id"], listed["finished_by_next_run"]) == (parked.rotation_id,
                                                                        False)
    assert "its provider 'count' is no longer in the config" in listed["detail"]

    run = world.cli("run", "--once")
    assert run.returncode == 0, run.stderr[-3000:]
    [said] = _orphan_events(run.stderr)
    assert said["finished"] is False
    assert "its provider 'count' is no longer in the config" in str(said["detail"])
    [still] = world.rotations("other")
    assert still == parked
    assert world.live_key_ids("other") == {parked.old_key_id, parked.new_key_id}
