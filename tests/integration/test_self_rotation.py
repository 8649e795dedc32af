"""Self-rotation: the management key rotator uses (admin mode) is itself a target.

``management_key_target = "admin"`` on the provider: the key that manages every account
is the current secret at the ``admin`` target's Vault path, and that target's account is
the emulator's admin account, so rotating it replaces the management key. Real emulator,
OpenBao, and SQLite and PostgreSQL; the crash cases SIGKILL ``rotate`` between the store
and the revoke, and right after the revoke, where only the new key can finish the work.
"""

from __future__ import annotations

import logging
import signal

import hvac
import pytest
import structlog
from structlog.testing import capture_logs

from rotator.app.runtime import build_runtime
from rotator.config.model import load_config
from rotator.core.model import Status
from rotator.engine.runner import Runner
from tests.integration.conftest import MakeWorld
from tests.integration.world import ADMIN_MANAGEMENT, TARGET, World

pytestmark = pytest.mark.integration


def _self_rotating_world(make_world: MakeWorld) -> World:
    """Targets ``app`` and ``admin``; the provider's management key is ``admin``'s."""
    world = make_world("app", grace="500ms")
    client = hvac.Client(url=world.vault_url, token=world.vault_token)
    try:
        client.secrets.kv.v2.create_or_update_secret(
            path="count/admin", secret={"api_key": world.admin.secret},
            mount_point=world.mount)
    finally:
        client.adapter.close()
    world.accounts["admin"] = world.admin
    text = world.config_path.read_text()
    assert ADMIN_MANAGEMENT in text
    text = text.replace(ADMIN_MANAGEMENT, 'management_key_target = "admin"')
    world.config_path.write_text(text + TARGET.format(
        provider="count", name="admin", sa=world.admin.account_id, mount=world.mount,
        path="count/admin"))
    return world


def _assert_manages_with_the_new_key(world: World) -> None:
    """The old management key is dead, the one Vault serves works, and manages keys."""
    assert world.whoami(world.admin.secret).status_code == 401
    _, served, _ = world.vault_secret("admin")
    who = world.whoami(served)
    assert who.status_code == 200 and who.json()["result"]["key_id"] != world.admin.key_id
    code, out = world.cli_here("rotate", "app", "--grace", "0s")
    assert code == 0, out
    for name in ("admin", "app"):
        world.assert_invariants(name)
    code, out = world.verify()
    assert code == 0, out


def test_rotating_the_management_key_keeps_rotator_working_throughout(
        make_world: MakeWorld) -> None:
    world = _self_rotating_world(make_world)
    # One process: the admin key is rotated (grace, then its old key revoked), and then
    # the app's, which that process can manage only with the key it switched to.
    code, out = world.cli_here("rotate", "admin", "app")
    assert code == 0, out
    assert [r.status for r in world.rotations()] == [Status.COMPLETED, Status.COMPLETED]
    assert world.whoami(world.accounts["app"].secret).status_code == 401
    _assert_manages_with_the_new_key(world)


@pytest.mark.parametrize("point", ["step:grace", "revoke_key:after"])
def test_a_crash_between_store_and_revoke_resumes_with_the_new_key_from_vault(
        make_world: MakeWorld, point: str) -> None:
    world = _self_rotating_world(make_world)
    crashed = world.cli("rotate", "admin", crash_at=point)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    _, served, _ = world.vault_secret("admin")
    assert served != world.admin.secret              # the store had happened
    code, out = world.cli_here("rotate", "admin", "--wait-lease", "5s")
    assert code == 0, out
    (rot,) = world.rotations("admin")         # resumed, not started again
    assert rot.status is Status.COMPLETED and rot.old_key_id == world.admin.key_id
    _assert_manages_with_the_new_key(world)


def test_a_replica_holding_the_old_management_key_reads_it_again_when_refused(
        make_world: MakeWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process rotates the management key with a grace shorter than the time this
    one keeps its copy (``MAX_AGE``): the provider refuses the copy, and this one reads
    Vault again and carries on (its rotation failed before). The replica is a runner in
    this process, long-lived like a daemon's, so it keeps its copy between rotations."""
    world = _self_rotating_world(make_world)
    for name, value in world.secrets_env.items():
        monkeypatch.setenv(name, value)
    rt = build_runtime(load_config(world.config_path))
    replica = Runner(providers=rt.providers, store=rt.store, repo=rt.repo, clock=rt.clock,
                     holder="replica", lease_ttl=rt.config.defaults.lease_ttl,
                     call_deadline=rt.config.call_deadline())
    try:
        first = replica.rotate(rt.spec("app"), grace=0.0)
        assert first.rotation.status is Status.COMPLETED, first    # its copy: the first key
        code, out = world.cli_here("rotate", "admin", "--grace", "0s")    # another process
        assert code == 0, out
        assert world.whoami(world.admin.secret).status_code == 401       # the copy is dead
        # Info lines too, whatever level the CLI run above left configured.
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
        with capture_logs() as said:
            second = replica.rotate(rt.spec("app"), grace=0.0)
        assert second.rotation.status is Status.COMPLETED, second
        # Its copy was refused and read again: not merely expired (``MAX_AGE``) meanwhile.
        assert [e["target"] for e in said if e["event"] == "management_key_read_again"] == [
            "app"]
    finally:
        rt.close()
    assert [r.status for r in world.rotations("app")] == [Status.COMPLETED] * 2
    world.assert_invariants("app")
    code, out = world.verify()
    assert code == 0, out
