"""``rotator verify`` on a real world: quiet when all is well, loud and non-zero when not."""

from __future__ import annotations

import pytest

from tests.integration.conftest import MakeWorld

pytestmark = pytest.mark.integration


def test_verify_is_clean_after_rotations_and_names_a_leaked_key(make_world: MakeWorld) -> None:
    world = make_world("app", "other", grace="0s")
    assert world.cli("rotate", "--all").returncode == 0
    clean = world.cli("verify")
    assert clean.returncode == 0, clean.stdout + clean.stderr[-2000:]
    assert clean.stdout.strip() == "ok: 2 target(s) checked, no findings"

    stray = world.emulator.state.create_key(world.accounts["other"].account_id, "forgotten")
    found = world.cli("verify")
    assert found.returncode == 1
    assert "leaked_key" in found.stdout and stray.key_id in found.stdout
    assert "1 finding(s) in 2 target(s)" in found.stdout
    only_app = world.cli("verify", "app")              # a target list narrows the check
    assert only_app.returncode == 0, only_app.stdout
    output = found.stdout + found.stderr + clean.stdout + clean.stderr
    secrets = [*world.emulator.state.issued_secrets(), world.admin.secret, world.vault_token]
    assert not [s for s in secrets if s in output]


def test_verify_reports_a_dead_key_in_vault(make_world: MakeWorld) -> None:
    world = make_world("app")
    served = world.live_key_ids("app").pop()
    world.emulator.state.delete_key(world.accounts["app"].account_id, served)
    result = world.cli("verify")
    assert result.returncode == 1
    assert "vault_key_dead" in result.stdout


def test_verify_of_an_unknown_target_is_a_usage_error(make_world: MakeWorld) -> None:
    world = make_world("app")
    result = world.cli("verify", "nope")
    assert result.returncode == 2 and "unknown target 'nope'" in result.stderr
