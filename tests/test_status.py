"""``status`` from the state store (memory, SQLite, PostgreSQL): the key Vault serves from
the store step on, the key retiring and its deadline, the last ended result (a failure
after the last completion included), and a completion whose old key is still queued.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from rotator.app.orphans import Configured, orphans
from rotator.app.status import status
from rotator.core.errors import ProviderUnavailable
from rotator.core.model import Status, Step
from rotator.core.vocabulary import AuditResult
from tests.fakes import Crash
from tests.fixtures.databases import StateStore
from tests.test_invariants import Setup


@pytest.fixture
def world(make_state: Callable[[Callable[[], datetime]], StateStore]) -> Setup:
    return Setup(make_state)


def test_in_grace_the_new_key_is_current_and_the_old_one_retires(world: Setup) -> None:
    first = world.runner().rotate(world.spec, grace=0).rotation
    world.clock.sleep(1)
    world.provider.fail["create_key"] = ProviderUnavailable("503")
    failed = world.runner().rotate(world.spec, grace=0).rotation
    del world.provider.fail["create_key"]
    assert failed.status in (Status.ROLLED_BACK, Status.FAILED)
    world.clock.sleep(5)
    flight = world.runner().rotate(world.spec, wait=False).rotation
    assert flight.step is Step.GRACE and flight.grace_ends_at is not None

    (st,) = status(world.repo, ["app"])
    assert (st.current_key_id, st.retiring_key_id, st.retiring_at) == (
        flight.new_key_id, first.new_key_id, flight.grace_ends_at)
    assert st.key_since == flight.grace_ends_at - timedelta(seconds=flight.grace_seconds)
    assert st.in_flight is not None and st.in_flight.rotation_id == flight.rotation_id
    assert st.last is not None and st.last.rotation_id == failed.rotation_id
    assert st.last_result == failed.status.value
    assert not st.old_key_pending
    assert st.step_since == st.key_since
    assert st.step_why == ("waiting for the grace window to end at "
                           f"{flight.grace_ends_at:%Y-%m-%d %H:%M:%S} UTC")
    # Dropped from the config, the target's rotation is an orphan, which the next run
    # finishes as it began while its provider is configured; configured, it is not one.
    provider = world.spec.provider
    [orphan] = orphans(world.repo, Configured({}, {provider: None}))
    assert (orphan.target, orphan.rotation_id, orphan.key_id) == ("app", flight.rotation_id,
                                                                  None)
    assert orphan.finishable and orphan.source == world.repo.running_rotation("app")
    assert "is finished by the next `rotator run --once`" in orphan.detail
    [gone] = orphans(world.repo, Configured({}, {}))
    assert not gone.finishable
    assert f"its provider {provider!r} is no longer in the config" in gone.detail
    assert "put [targets.app] back" in gone.detail
    # Its Vault path now another target's, or its provider's management key: kept.
    [taken] = orphans(world.repo, Configured({"web": world.spec.ref}, {provider: None}))
    assert taken.blocked is not None and taken.blocked.startswith(
        "its Vault path is now that of configured target 'web', whose rotations move it: "
        "rename [targets.web] back to [targets.app]")
    assert "put [targets.app] back" not in taken.detail     # two targets on one path
    # The same mount and path under another field is the same KV v2 secret.
    other_field = replace(world.spec.ref, field="other_key")
    [shared] = orphans(world.repo, Configured({"web": other_field}, {provider: None}))
    assert shared.blocked == taken.blocked
    [own] = orphans(world.repo, Configured({"web": world.spec.ref}, {provider: "web"}))
    assert own.blocked is not None and "own management key (target web)" in own.blocked
    assert orphans(world.repo, Configured({"app": world.spec.ref}, {provider: None})) == []


def test_a_rotation_cut_short_mid_call_says_since_when_and_that_its_outcome_is_unknown(
        world: Setup) -> None:
    world.provider.crash_at = "create_key:after"
    with pytest.raises(Crash):
        world.runner().rotate(world.spec)
    world.clock.sleep(90)
    (st,) = status(world.repo, ["app"])
    assert st.in_flight is not None and st.in_flight.step is Step.CREATE
    [intent] = [e for e in world.repo.events(target="app") if e.action == "create_key"]
    assert st.step_since == intent.at
    assert st.step_why is not None and st.step_why.startswith(
        f"create_key started at {intent.at:%Y-%m-%d %H:%M:%S} UTC, its outcome not recorded")


def test_a_completion_whose_old_key_is_queued_is_pending_until_cleaned(world: Setup) -> None:
    old = world.provider.key_of(world.store.current(world.spec.ref))
    world.provider.fail["delete_key"] = ProviderUnavailable("503")
    rot = world.runner().rotate(world.spec, grace=0).rotation
    (st,) = status(world.repo, ["app"])
    assert rot.status is Status.COMPLETED
    assert st.last_result == AuditResult.COMPLETED_PENDING_CLEANUP
    assert (st.current_key_id, st.retiring_key_id, st.retiring_at) == (rot.new_key_id, old,
                                                                       None)
    assert st.old_key_pending and st.pending_cleanups == 1

    del world.provider.fail["delete_key"]
    assert world.runner().cleanup(world.spec) == (1, 0)
    (st,) = status(world.repo, ["app"])
    assert st.last_result == AuditResult.COMPLETED_PENDING_CLEANUP   # the trail's history
    assert (st.retiring_key_id, st.pending_cleanups, st.old_key_pending) == (None, 0, False)
