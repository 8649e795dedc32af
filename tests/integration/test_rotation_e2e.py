"""A full rotation against real OpenBao, the Count emulator and SQLite/PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from rotator.core.vocabulary import EventKind
from tests.integration.conftest import MakeWorld
from tests.integration.world import PROVIDER_KINDS

pytestmark = pytest.mark.integration
# Count's adapter, and the generic type = "http" one on the emulator's alt layout: for the
# full rotation, zero downtime through grace and self mode (the calls the others add are
# the same calls, and each case costs seconds of CLI start-up).
on_both_providers = pytest.mark.parametrize("provider_kind", PROVIDER_KINDS)


@on_both_providers
def test_full_rotation_through_the_cli(make_world: MakeWorld) -> None:
    w = make_world("app", grace="1s")
    version, old_secret, _ = w.vault_secret("app")
    old_key = w.key_id_of(old_secret)

    # Stop at the grace step: the new key is live in Vault, the old one still works.
    rotating = w.cli("rotate", "app")
    assert rotating.returncode == 0, rotating.stderr
    assert "completed" in rotating.stdout

    new_version, new_secret, meta = w.vault_secret("app")
    assert new_version == version + 1 and new_secret != old_secret
    new_key = w.key_id_of(new_secret)
    assert meta["rotator_key_id"] == new_key and meta["rotator_rotation_id"].startswith("rot_")
    assert w.whoami(old_secret).status_code == 401           # revoked after grace
    w.assert_invariants("app")

    client = w.vault()
    try:
        data = client.secrets.kv.v2.read_secret_version(path="count/app", mount_point=w.mount,
                                                        raise_on_deleted_version=True)
    finally:
        client.adapter.close()
    assert data["data"]["data"]["note"] == "keep me"          # other fields untouched

    audit = json.loads(w.cli("audit", "app", "--format", "json").stdout)
    effects = [(e["action"], e["kind"], e["result"]) for e in audit if e["kind"] != "note"]
    assert effects == [
        ("create_key", "intent", None), ("create_key", "outcome", "ok"),
        ("vault_write", "intent", None), ("vault_write", "outcome", "ok"),
        ("revoke_key", "intent", None), ("revoke_key", "outcome", "ok"),
    ]
    outcome_ids = [e["request_id"] for e in audit
                   if e["kind"] == "outcome" and e["action"] in ("create_key", "revoke_key")]
    assert all(rid and rid.startswith("req_") for rid in outcome_ids)
    assert {old_key, new_key} <= {e["key_id"] for e in audit}

    status = w.cli("status")
    assert status.returncode == 0 and new_key in status.stdout


@on_both_providers
def test_old_key_works_during_grace_and_dies_after(make_world: MakeWorld) -> None:
    w = make_world("app", grace="3s")
    _, old_secret, _ = w.vault_secret("app")
    proc = subprocess.Popen(w.cli_args("rotate", "app"), env=w.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            _, current, _ = w.vault_secret("app")
            if current != old_secret:
                break
            time.sleep(0.05)
        assert current != old_secret, "the new key never reached Vault"
        # Grace: consumers on either key keep working.
        assert w.whoami(old_secret).status_code == 200
        assert w.whoami(current).status_code == 200
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert w.whoami(old_secret).status_code == 401
    assert w.whoami(current).status_code == 200
    w.assert_invariants("app")


@on_both_providers
def test_self_mode_rotation(make_world: MakeWorld) -> None:
    w = make_world("app", auth_mode="self", grace="0s")
    result = w.cli("rotate", "app")
    assert result.returncode == 0, result.stderr
    w.assert_invariants("app")


def test_rotate_all_and_dry_run(make_world: MakeWorld) -> None:
    w = make_world("one", "two", grace="0s")
    before = {n: w.vault_secret(n)[0] for n in ("one", "two")}
    dry = w.cli("rotate", "--all", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would create a key" in dry.stdout and "would wait" in dry.stdout
    assert {n: w.vault_secret(n)[0] for n in ("one", "two")} == before
    assert sum(w.emulator.state.counters().creates.values()) == 0
    result = w.cli("rotate", "--all")
    assert result.returncode == 0, result.stderr
    assert "2 of 2 target(s) rotated" in result.stdout
    for name in ("one", "two"):
        w.assert_invariants(name)


def test_emergency_rotation_with_zero_grace(make_world: MakeWorld) -> None:
    w = make_world("app", grace="1h")
    _, old_secret, _ = w.vault_secret("app")
    started = time.monotonic()
    result = w.cli("rotate", "app", "--grace", "0s")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 30
    assert w.whoami(old_secret).status_code == 401
    w.assert_invariants("app")


def test_audit_formats(make_world: MakeWorld) -> None:
    w = make_world("app", grace="0s")
    assert w.cli("rotate", "app").returncode == 0
    table = w.cli("audit")
    assert table.returncode == 0 and "ROTATION_ID" in table.stdout
    csv = w.cli("audit", "app", "--format", "csv", "--since", "1h").stdout.splitlines()
    assert csv[0].startswith("id,at,target")
    assert csv[0].endswith(",op_id,lease_generation,chain_seq,chain_hash")
    assert len(csv) > 6
    assert w.cli("audit", "--since", "2999-01-01", "--format", "json").stdout.strip() == "[]"
    assert w.cli("audit", "nope").returncode == 2


def test_every_side_effect_has_intent_and_outcome_rows(make_world: MakeWorld) -> None:
    w = make_world("app", grace="0s")
    assert w.cli("rotate", "app").returncode == 0
    repo = w.repository()
    try:
        events = repo.events(target="app")
    finally:
        repo.engine.dispose()
    intents = {e.op_id: e for e in events if e.kind is EventKind.INTENT}
    outcomes = {e.op_id: e for e in events if e.kind is EventKind.OUTCOME}
    assert intents and intents.keys() == outcomes.keys()
    for op_id, intent in intents.items():
        assert intent.id < outcomes[op_id].id


def test_schema_behind_refuses_to_run(make_world: MakeWorld) -> None:
    w = make_world("app")
    text = w.config_path.read_text().replace(w.db_url, f"sqlite:///{w.config_path.parent}/e.db")
    w.config_path.write_text(text)
    result = w.cli("rotate", "app")
    assert result.returncode == 3 and "rotator db upgrade" in result.stderr
    assert w.cli("db", "upgrade").returncode == 0
    assert w.cli("db", "current").returncode == 0
