"""SIGKILL the rotator at every step boundary, before and after each side effect; restart;
the rotation completes, no key leaks, and Vault's current key always authenticates.
"""

from __future__ import annotations

import signal

import pytest

from tests.integration.conftest import MakeWorld

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Every named point the runner passes on a rotation's happy path (see crashpoints.py).
BOUNDARIES = [
    "started",
    "create_key:before", "create_key:after", "step:verify",
    "step:store", "vault_write:before", "vault_write:after",
    "step:grace", "revoke_key:before", "revoke_key:after", "step:done",
]


@pytest.mark.parametrize("point", BOUNDARIES)
def test_sigkill_at_boundary_then_resume(make_world: MakeWorld, point: str) -> None:
    w = make_world("app", grace="200ms")
    _, first_secret, _ = w.vault_secret("app")

    crashed = w.cli("rotate", "app", crash_at=point)
    assert crashed.returncode == -signal.SIGKILL, (crashed.returncode, crashed.stderr[-2000:])

    # Between the crash and the restart, consumers still get a working key from Vault.
    _, served, _ = w.vault_secret("app")
    assert w.whoami(served).status_code == 200

    resumed = w.cli("rotate", "app", "--wait-lease", "5s")   # the dead process's lease
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _, final_secret, _ = w.vault_secret("app")
    w.assert_invariants("app")
    if point != "step:done":
        assert "rotation_resumed" in resumed.stderr or point == "started"
    assert final_secret != first_secret
    assert w.whoami(first_secret).status_code == 401


def test_crash_between_create_and_record_recreates_under_a_new_key(make_world: MakeWorld
                                                                   ) -> None:
    """The key was created but its secret died with the process: delete it, create again."""
    w = make_world("app", grace="0s")
    crashed = w.cli("rotate", "app", crash_at="create_key:after")
    assert crashed.returncode == -signal.SIGKILL
    assert len(w.live_key_ids("app")) == 2            # the orphan exists, unrecorded
    resumed = w.cli("rotate", "app", "--wait-lease", "5s")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    account = w.accounts["app"].account_id
    assert w.emulator.state.counters().creates[account] == 2
    w.assert_invariants("app")
