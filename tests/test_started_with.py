"""A rotation is driven only with the provider and Vault ref it started with (revision
0009 records them): resumed, cancelled or cleaned up with a spec that names another path
or provider (a config edited under it), the runner refuses before any side effect, so a
key is never written, restored or deleted anywhere its rotation did not begin.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime

import pytest

from rotator.core.errors import ProviderUnavailable, RotatorError
from rotator.core.model import Status, Step
from rotator.core.ports import SecretRef
from rotator.engine.runner import Runner
from tests.fixtures.databases import StateStore
from tests.test_invariants import Setup


@pytest.fixture
def world(make_state: Callable[[Callable[[], datetime]], StateStore]) -> Setup:
    return Setup(make_state)


def test_a_rotation_is_never_resumed_or_cancelled_at_another_vault_path(world: Setup) -> None:
    flight = world.runner().rotate(world.spec, wait=False).rotation
    assert flight.step is Step.GRACE and flight.vault_ref == world.spec.ref
    moved = dataclasses.replace(world.spec, ref=SecretRef("secret", "elsewhere", "api_key"))
    world.store.put(moved.ref, world.store.current(world.spec.ref))
    before = (world.store.current(moved.ref), len(world.repo.events(target="app")))
    world.clock.sleep(61)
    with pytest.raises(RotatorError, match="started at Vault secret/count/app"):
        world.runner().rotate(moved)
    with pytest.raises(RotatorError, match="started at Vault"):
        world.runner().cancel(moved, actor="me", reason="x")
    assert (world.store.current(moved.ref), len(world.repo.events(target="app"))) == before
    assert world.repo.running_rotation("app") == flight
    # With the spec it started with, it finishes.
    assert world.runner().rotate(world.spec).rotation.status is Status.COMPLETED


def test_a_queued_deletion_is_never_tried_with_another_provider(world: Setup) -> None:
    world.provider.fail["delete_key"] = ProviderUnavailable("503")
    rot = world.runner().rotate(world.spec, grace=0).rotation
    del world.provider.fail["delete_key"]
    [queued] = world.repo.pending_cleanups("app")
    assert (queued.key_id, queued.provider) == (rot.old_key_id, "count")
    other = dataclasses.replace(world.spec, provider="other")
    # A runner that knows both names: only the queued name may delete the key.
    both = Runner(providers={"count": world.provider, "other": world.provider},
                  store=world.store, repo=world.repo, clock=world.clock, holder="h",
                  lease_ttl=30)
    assert both.cleanup(other) == (0, 1)          # left queued, nothing deleted
    assert rot.old_key_id in world.provider.keys
    assert both.cleanup(world.spec) == (1, 0)
    assert rot.old_key_id not in world.provider.keys
