"""Faults against the real servers: a key that never authenticates, Vault gone during
store, 503s and 429s, a key limit filled by stale keys."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from rotator.core.model import FailureCode, Status
from rotator.emulator import EmulatorSettings
from tests.fixtures.openbao import OpenBao
from tests.integration.conftest import MakeWorld
from tests.integration.proxy import CuttableProxy

pytestmark = pytest.mark.integration


def test_key_that_never_authenticates_rolls_back(make_world: MakeWorld) -> None:
    w = make_world("app", probe_timeout="600ms")
    version, old_secret, _ = w.vault_secret("app")
    old_ids = w.live_key_ids("app")
    w.emulator.settings = EmulatorSettings(propagation_delay=30)  # new keys never work in time
    result = w.cli_in_process("rotate", "app")
    assert result.returncode == 1
    assert "rolled_back" in result.stdout and "did not authenticate" in result.stdout
    assert w.vault_secret("app")[:2] == (version, old_secret)      # Vault never touched
    assert w.whoami(old_secret).status_code == 200                 # old key untouched
    assert w.live_key_ids("app") == old_ids                        # new key deleted
    account = w.accounts["app"].account_id
    assert w.emulator.state.counters().deletes[account] == 1
    w.assert_invariants("app")


def test_vault_unreachable_during_store_deletes_the_new_key(make_world: MakeWorld,
                                                            openbao: OpenBao,
                                                            tmp_path: Path) -> None:
    w = make_world("app", grace="0s")
    proxy = CuttableProxy(openbao.port)
    w.config_path.write_text(w.config_path.read_text().replace(openbao.url, proxy.url))
    version, old_secret, _ = w.vault_secret("app")
    w.emulator.settings = EmulatorSettings(propagation_delay=0.8)  # time to cut Vault
    account = w.accounts["app"].account_id
    log = tmp_path / "stderr.log"
    try:
        with log.open("w") as err:
            proc = subprocess.Popen(w.cli_args("rotate", "app"), env=w.env,
                                    stdout=subprocess.PIPE, stderr=err, text=True)
            deadline = time.monotonic() + 20
            while not w.emulator.state.counters().creates.get(account):
                assert time.monotonic() < deadline, "no key was created"
                time.sleep(0.02)
            proxy.cut()                                 # Vault goes away after create
            while "rollback_blocked" not in log.read_text():
                assert time.monotonic() < deadline + 20, log.read_text()[-2000:]
                time.sleep(0.05)
            assert len(w.live_key_ids("app")) == 2      # not deleted while Vault is unknown
            proxy.restore()                             # Vault is back
            out, _ = proc.communicate(timeout=60)
    finally:
        proxy.close()
    assert proc.returncode == 1, out
    assert "rolled_back" in out
    assert w.vault_secret("app")[:2] == (version, old_secret)
    assert w.whoami(old_secret).status_code == 200
    w.assert_invariants("app")
    audit = json.loads(w.cli_in_process("audit", "app", "--format", "json").stdout)
    writes = [e for e in audit if e["action"] == "vault_write" and e["kind"] == "outcome"]
    assert writes and writes[0]["result"] == "error"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)   # Vault's CAS, not SQL's
def test_a_vault_change_after_plan_is_not_overwritten(make_world: MakeWorld,
                                                      tmp_path: Path) -> None:
    w = make_world("app", probe_timeout="5s")
    version, old_secret, _ = w.vault_secret("app")
    old_ids = w.live_key_ids("app")
    w.emulator.settings = EmulatorSettings(propagation_delay=1.0)  # time to write in between
    account = w.accounts["app"].account_id
    with (tmp_path / "stderr.log").open("w") as err:
        proc = subprocess.Popen(w.cli_args("rotate", "app"), env=w.env,
                                stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        deadline = time.monotonic() + 20
        while not w.emulator.state.counters().creates.get(account):   # planned and created
            assert time.monotonic() < deadline, "no key was created"
            time.sleep(0.02)
        client = w.vault()                    # someone else edits the secret meanwhile
        try:
            client.secrets.kv.v2.create_or_update_secret(
                path="count/app", secret={"api_key": old_secret, "note": "edited by a human"},
                cas=version, mount_point=w.mount)
        finally:
            client.adapter.close()
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, out + (tmp_path / "stderr.log").read_text()[-3000:]
    (rot,) = w.rotations("app")
    assert rot.status is Status.ROLLED_BACK, rot.reason
    assert rot.failure is not None and rot.failure.code is FailureCode.CAS_LOST
    client = w.vault()
    try:
        data = client.secrets.kv.v2.read_secret_version(
            path="count/app", mount_point=w.mount, raise_on_deleted_version=True)["data"]
    finally:
        client.adapter.close()
    assert data["metadata"]["version"] == version + 1                    # theirs, and no more
    assert data["data"] == {"api_key": old_secret, "note": "edited by a human"}
    assert w.live_key_ids("app") == old_ids                             # the new key deleted
    assert w.emulator.state.counters().deletes[account] == 1
    w.assert_invariants("app")


def test_503s_and_429s_are_retried_to_success(make_world: MakeWorld) -> None:
    w = make_world("app", grace="0s")
    w.emulator.settings = EmulatorSettings(error_rate=0.25, rate_429=0.25, rate_window=0.1,
                                           seed=7)
    text = w.config_path.read_text().replace("max_attempts = 6", "max_attempts = 12")
    w.config_path.write_text(text)
    result = w.cli_in_process("rotate", "app")
    assert result.returncode == 0, result.stderr[-3000:]
    faults = w.emulator.state.counters().faults
    assert sum(faults.values()) > 0, faults
    w.emulator.settings = EmulatorSettings()
    w.assert_invariants("app")


def test_a_rate_limit_outlasting_the_retry_budget_parks_and_the_next_rotate_finishes(
        make_world: MakeWorld) -> None:
    """Every request 429 with a Retry-After of 30 s, past the 5 s budget: the rotation is
    parked at its step (nothing made, Vault untouched), not failed or rolled back; once
    the provider answers, the next ``rotate`` joins it and finishes that one rotation."""
    w = make_world("app", grace="0s")
    before = w.live_key_ids("app")
    w.emulator.settings = EmulatorSettings(rate_429=1.0, rate_window=30.0)
    parked = w.cli_in_process("rotate", "app")
    assert parked.returncode == 1, parked.stdout + parked.stderr[-3000:]
    assert "rate limited at plan, parked" in parked.stdout, parked.stdout
    (rot,) = w.rotations("app")
    assert (rot.status, rot.failure) == (Status.RUNNING, None)
    assert w.live_key_ids("app") == before and w.vault_secret("app")[0] == 1
    w.emulator.settings = EmulatorSettings()
    done = w.cli_in_process("rotate", "app")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    (finished,) = w.rotations("app")
    assert (finished.rotation_id, finished.status) == (rot.rotation_id, Status.COMPLETED)
    w.assert_invariants("app")


def test_key_limit_filled_by_a_stale_key(make_world: MakeWorld) -> None:
    w = make_world("app", grace="0s")
    account = w.accounts["app"].account_id
    stale = w.emulator.state.create_key(account, "forgotten-by-a-human")
    result = w.cli_in_process("rotate", "app")
    assert result.returncode == 0, result.stderr[-3000:]
    assert stale.key_id not in w.live_key_ids("app")
    audit = json.loads(w.cli_in_process("audit", "app", "--format", "json").stdout)
    reasons = [e["detail"] for e in audit if e["action"] == "delete_key" and e["kind"] == "intent"]
    assert any("key limit reached" in r for r in reasons), reasons
    w.assert_invariants("app")
