"""An old key that still authenticates after its deletion is a finding of verify and status.

On each state store (memory, SQLite, PostgreSQL), with the fake provider and Vault: the
rotation's probe recorded ``still_valid``; ``verify`` probes the key again and reports it
while it lives, and stops once it is dead; ``status`` reports what the trail recorded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime

import pytest

from rotator.app.status import status
from rotator.app.verify import FindingKind
from rotator.core.errors import ProviderUnavailable
from rotator.core.model import Status
from rotator.core.vocabulary import AuditResult
from tests.fixtures.databases import StateStore
from tests.test_invariants import Setup


@pytest.fixture
def world(make_state: Callable[[Callable[[], datetime]], StateStore]) -> Setup:
    return Setup(make_state)


def test_a_key_the_provider_did_not_revoke_is_found_until_it_dies(world: Setup) -> None:
    world.provider.revoke_lag = math.inf
    old = world.provider.key_of(world.store.current(world.spec.ref))
    rot = world.runner().rotate(world.spec, grace=0).rotation
    assert rot.status is Status.COMPLETED
    findings = world.check()
    assert [(f.kind, f.target, f.rotation_id, f.key_id) for f in findings] == [
        (FindingKind.REVOKED_KEY_ALIVE, "app", rot.rotation_id, old)]
    assert "the provider did not revoke it" in findings[0].detail
    (st,) = status(world.repo, ["app"])
    assert [(e.rotation_id, e.key_id, e.result) for e in st.revoked_alive] == [
        (rot.rotation_id, old, AuditResult.STILL_VALID)]

    world.provider.revoke_lag = 0.0       # revoked by hand at last: verify probes again
    assert world.check() == []


def test_a_revoked_key_that_is_refused_is_no_finding(world: Setup) -> None:
    world.runner().rotate(world.spec, grace=0)
    assert world.check() == []
    (st,) = status(world.repo, ["app"])
    assert st.revoked_alive == ()


def test_a_key_revoked_late_by_the_cleanup_queue_is_no_trail_finding(world: Setup) -> None:
    # The probe note comes after the rotation's ending note: not "moved backwards".
    world.provider.fail["delete_key"] = ProviderUnavailable("503")
    world.runner().rotate(world.spec, grace=0)
    del world.provider.fail["delete_key"]
    assert world.runner().cleanup(world.spec) == (1, 0)
    assert world.check() == []
