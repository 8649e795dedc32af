"""SIGKILL ``rotator rotate`` (the foreground command) mid-rotation; a second ``rotate``
resumes it: the rotation completes, no key leaks, and Vault's current key always works.

Every boundary is covered for the daemon by test_crash_matrix.py (the runner is the same);
here a few points, one per kind of resume, prove the command's own resume path.
"""

from __future__ import annotations

import signal

import pytest

from tests.integration.conftest import MakeWorld

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# A secret lost before store, a write whose landing must be reconciled, a revoke redone.
BOUNDARIES = ["create_key:after", "vault_write:after", "revoke_key:before"]


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
    assert "rotation_resumed" in resumed.stderr
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
