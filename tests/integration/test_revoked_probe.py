"""The old key is probed after its deletion, on real OpenBao, the emulator and SQL.

A provider that revokes: the trail records ``refused``. The emulator told to let deleted
keys go on authenticating (``revoke_delay``, a provider that did not revoke): the trail
records ``still_valid``, ``rotator verify`` and ``rotator status`` name the target, the
rotation and the key and exit 1, and nothing prints a secret.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from tests.integration.conftest import MakeWorld
from tests.integration.world import World

pytestmark = pytest.mark.integration


def _probes(w: World) -> list[dict[str, object]]:
    audit = json.loads(w.cli_in_process("audit", "app", "--format", "json").stdout)
    return [e for e in audit if e["action"] == "probe_revoked"]


def test_a_real_rotation_records_the_old_key_refused(make_world: MakeWorld) -> None:
    w = make_world("app", grace="0s")
    _, old_secret, _ = w.vault_secret("app")
    old_key = w.whoami(old_secret).json()["result"]["key_id"]
    result = w.cli_in_process("rotate", "app")
    assert result.returncode == 0, result.stderr
    (probe,) = _probes(w)
    assert (probe["kind"], probe["result"], probe["key_id"]) == ("note", "refused", old_key)
    assert w.cli_in_process("verify").returncode == 0
    status = w.cli_in_process("status")
    assert status.returncode == 0 and "revoked_key_alive" not in status.stdout
    w.assert_invariants("app")


def surviving_old_key(w: World, target: str = "app") -> str:
    """Make the emulator a provider that does not revoke (deleted keys go on
    authenticating); the id of the key Vault serves ``target`` now."""
    w.emulator.settings = dataclasses.replace(w.emulator.settings, revoke_delay=3600.0)
    _, old_secret, _ = w.vault_secret(target)
    key_id: str = w.whoami(old_secret).json()["result"]["key_id"]
    return key_id


def test_a_provider_that_did_not_revoke_is_found_by_verify_and_status(
        make_world: MakeWorld) -> None:
    w = make_world("app", grace="0s")
    old_key = surviving_old_key(w)
    rotated = w.cli_in_process("rotate", "app")
    assert rotated.returncode == 0, rotated.stderr        # the delete itself succeeded
    loud = [json.loads(line) for line in rotated.stderr.splitlines()
            if "revoked_key_still_authenticates" in line]
    assert [e["level"] for e in loud] == ["error"] and loud[0]["key_id"] == old_key
    (probe,) = _probes(w)
    assert (probe["result"], probe["key_id"]) == ("still_valid", old_key)
    rotation_id = str(probe["rotation_id"])

    verify = w.cli_in_process("verify")
    assert verify.returncode == 1, verify.stdout + verify.stderr[-2000:]
    (row,) = [line for line in verify.stdout.splitlines() if "revoked_key_alive" in line]
    assert "app" in row and rotation_id in row and old_key in row
    status = w.cli_in_process("status")
    assert status.returncode == 1, status.stdout + status.stderr[-2000:]
    (row,) = [line for line in status.stdout.splitlines() if "revoked_key_alive" in line]
    assert "app" in row and rotation_id in row and old_key in row

    output = "".join(p.stdout + p.stderr for p in (rotated, verify, status))
    secrets = [*w.emulator.state.issued_secrets(), w.admin.secret, w.vault_token]
    assert not [s for s in secrets if s in output]

    # Revoked at last (the provider caught up): verify probes again and is clean.
    w.emulator.settings = dataclasses.replace(w.emulator.settings, revoke_delay=0.0)
    assert w.cli_in_process("verify").returncode == 0
