"""``rotator verify`` on a real world: quiet when all is well, loud and non-zero when not."""

from __future__ import annotations

import json
import socket

import pytest

from rotator.emulator import EmulatorSettings
from tests.integration.conftest import MakeWorld
from tests.integration.world import World

pytestmark = pytest.mark.integration


def test_verify_is_clean_after_rotations_and_names_a_leaked_key(make_world: MakeWorld) -> None:
    world = make_world("app", "other", grace="0s")
    assert world.cli_in_process("rotate", "--all").returncode == 0
    clean = world.cli_in_process("verify")
    assert clean.returncode == 0, clean.stdout + clean.stderr[-2000:]
    assert clean.stdout.strip() == "ok: 2 target(s) checked, no findings"

    stray = world.emulator.state.create_key(world.accounts["other"].account_id, "forgotten")
    found = world.cli_in_process("verify")
    assert found.returncode == 1
    assert "leaked_key" in found.stdout and stray.key_id in found.stdout
    assert "1 finding(s) in 2 target(s)" in found.stdout
    found_json = world.cli_in_process("verify", "-o", "json")
    assert found_json.returncode == 1, found_json.stderr[-2000:]
    assert [(f["kind"], f["key_id"]) for f in json.loads(found_json.stdout)["findings"]] == [
        ("leaked_key", stray.key_id)]
    only_app = world.cli_in_process("verify", "app")              # a target list narrows the check
    assert only_app.returncode == 0, only_app.stdout
    output = found.stdout + found.stderr + clean.stdout + clean.stderr
    secrets = [*world.emulator.state.issued_secrets(), world.admin.secret, world.vault_token]
    assert not [s for s in secrets if s in output]


def test_verify_reports_a_dead_key_in_vault(make_world: MakeWorld) -> None:
    world = make_world("app")
    served = world.live_key_ids("app").pop()
    world.emulator.state.delete_key(world.accounts["app"].account_id, served)
    result = world.cli_in_process("verify")
    assert result.returncode == 1
    assert "vault_key_dead" in result.stdout


def test_verify_of_an_unknown_target_is_a_usage_error(make_world: MakeWorld) -> None:
    world = make_world("app")
    result = world.cli_in_process("verify", "nope")
    assert result.returncode == 2 and "unknown target 'nope'" in result.stderr


def _rotated(make_world: MakeWorld) -> World:
    """Two targets rotated once: each account holds one live key, the one Vault serves."""
    world = make_world("app", "other", grace="0s")
    assert world.cli_in_process("rotate", "--all").returncode == 0
    return world


def _rows(stdout: str) -> list[tuple[str, str]]:
    """(finding, target) of each row of verify's table."""
    lines = stdout.strip().splitlines()[1:-1]
    return [(line.split()[0], line.split()[1]) for line in lines]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_verify_with_a_wrong_vault_token_could_not_check_and_calls_no_key_leaked(
        make_world: MakeWorld) -> None:
    world = _rotated(make_world)
    result = world.cli_in_process("verify", env={"IT_VAULT_TOKEN": "hvs.not-a-token"})
    assert result.returncode == 3, result.stdout + result.stderr[-2000:]
    assert _rows(result.stdout) == [("could_not_check", "app"), ("could_not_check", "other")]
    assert "could not read Vault's current key at" in result.stdout
    assert "status=403" in result.stdout and "[vault.auth]" in result.stdout
    assert result.stdout.strip().endswith(
        "0 finding(s) in 2 target(s); 2 target(s) could not be checked (app, other): "
        "what could not be read proves nothing")
    assert "hvs.not-a-token" not in result.stdout + result.stderr
    # -o json: the same findings and exit code, for a program.
    as_json = world.cli_in_process("verify", "-o", "json",
                                   env={"IT_VAULT_TOKEN": "hvs.not-a-token"})
    assert as_json.returncode == 3, as_json.stderr[-2000:]
    answer = json.loads(as_json.stdout)
    assert (answer["checked"], answer["could_not_check"]) == (2, ["app", "other"])
    assert [(f["kind"], f["target"]) for f in answer["findings"]] == _rows(result.stdout)
    assert set(answer["findings"][0]) == {"kind", "target", "rotation_id", "key_id", "detail"}
    assert "status=403" in answer["findings"][0]["detail"]
    assert "hvs.not-a-token" not in as_json.stdout
    # status reads SQL only: Vault's refusal changes nothing it says.
    status = world.cli_in_process("status", env={"IT_VAULT_TOKEN": "hvs.not-a-token"})
    assert status.returncode == 0 and "could_not_check" not in status.stdout, status.stderr


def test_verify_names_a_missing_vault_secret_and_calls_no_key_leaked(
        make_world: MakeWorld) -> None:
    world = _rotated(make_world)
    client = world.vault()
    try:
        client.secrets.kv.v2.delete_metadata_and_all_versions(path="count/app",
                                                              mount_point=world.mount)
    finally:
        client.adapter.close()
    result = world.cli_in_process("verify")
    assert result.returncode == 1, result.stdout + result.stderr[-2000:]
    assert _rows(result.stdout) == [("vault_secret_missing", "app")]
    assert f"no current key at {world.mount}/count/app" in result.stdout
    assert "1 finding(s) in 2 target(s)" in result.stdout


def test_verify_with_the_provider_unreachable_could_not_check(make_world: MakeWorld) -> None:
    world = _rotated(make_world)
    text = world.config_path.read_text()
    world.config_path.write_text(text.replace(world.emulator.url,
                                              f"http://127.0.0.1:{_closed_port()}"))
    result = world.cli_in_process("verify", "app")
    assert result.returncode == 3, result.stdout + result.stderr[-2000:]
    # Vault's key could not be probed, and the keys could not be listed: both said, no more.
    assert _rows(result.stdout) == [("could_not_check", "app")] * 2
    assert "[providers.count] base_url" in result.stdout


def test_verify_with_the_provider_answering_5xx_could_not_check(make_world: MakeWorld) -> None:
    world = _rotated(make_world)
    world.emulator.settings = EmulatorSettings(error_rate=1.0)
    try:
        result = world.cli_in_process("verify", "app")
    finally:
        world.emulator.settings = EmulatorSettings()
    assert result.returncode == 3, result.stdout + result.stderr[-2000:]
    assert _rows(result.stdout) == [("could_not_check", "app")] * 2
    assert "status=5" in result.stdout
