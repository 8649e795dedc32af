"""Deleting a stray key (``rotator reconcile --fix``) through the audit trail."""

from __future__ import annotations

import pytest

from rotator.core.errors import LeaseLost
from rotator.core.model import KeyRecord
from rotator.core.ports import Lease
from rotator.core.secret import Secret
from rotator.core.vocabulary import AuditAction, AuditResult, EventKind
from rotator.engine.strays import StrayDeleter
from tests.fakes import Crash, FakeClock, FakeProvider, MemoryRepository


def _world() -> tuple[FakeProvider, MemoryRepository, FakeClock, Lease, Secret, KeyRecord]:
    clock = FakeClock()
    provider = FakeProvider(clock, key_limit=5)
    admin = provider.seed("sa_admin")
    provider.seed("sa_app")
    stray = provider._make("sa_app", "made-by-hand", live=True)
    repo = MemoryRepository(clock.now)
    lease = repo.acquire_lease("app", "me", 60, clock.now())
    assert lease is not None
    return provider, repo, clock, lease, admin, KeyRecord(stray.key_id, stray.name)


def _deleter(provider: FakeProvider, repo: MemoryRepository, clock: FakeClock, lease: Lease,
             run_id: str = "rec_1") -> StrayDeleter:
    def confirm() -> None:
        if not repo.confirm_lease(lease, 60, clock.now()):
            raise LeaseLost("taken over", target=lease.target)

    return StrayDeleter(provider, repo, clock, lease, confirm, run_id=run_id,
                        service_account="sa_app", actor="alice@host")


def test_a_stray_key_is_deleted_between_an_intent_and_an_outcome_naming_who_and_why() -> None:
    provider, repo, clock, lease, admin, stray = _world()
    gone = _deleter(provider, repo, clock, lease).delete(stray, "nothing uses it", admin)
    assert not gone.already_gone and stray.key_id not in provider.keys
    intent, outcome = repo.recorded
    assert (intent.kind, outcome.kind) == (EventKind.INTENT, EventKind.OUTCOME)
    assert intent.action == outcome.action == AuditAction.DELETE_STRAY
    assert intent.op_id == outcome.op_id and outcome.result == AuditResult.OK
    assert (intent.rotation_id, intent.target, intent.key_id) == ("rec_1", "app", stray.key_id)
    assert intent.detail == "rotator reconcile --fix by alice@host: nothing uses it"
    assert repo.by_id == {}                        # a reconcile run is no rotation


def test_a_deletion_a_killed_run_left_undecided_is_closed_by_the_next_run() -> None:
    provider, repo, clock, lease, admin, stray = _world()
    provider.crash_at = "delete_key:after"
    with pytest.raises(Crash):
        _deleter(provider, repo, clock, lease).delete(stray, "nothing uses it", admin)
    assert repo.has_open_intent("app")
    provider.crash_at = None
    later = _deleter(provider, repo, clock, lease, run_id="rec_2")
    assert later.close_interrupted(repo.events(target="app")) == 1
    assert not repo.has_open_intent("app")
    closing = repo.recorded[-1]
    assert (closing.rotation_id, closing.result) == ("rec_1", AuditResult.UNKNOWN)
    assert later.close_interrupted(repo.events(target="app")) == 0


def test_a_deleter_whose_lease_was_taken_over_calls_nothing() -> None:
    provider, repo, clock, lease, admin, stray = _world()
    repo.leases["app"] = ("other", clock.now(), lease.generation + 1)
    with pytest.raises(LeaseLost):
        _deleter(provider, repo, clock, lease).delete(stray, "nothing uses it", admin)
    assert stray.key_id in provider.keys and "delete_key" not in provider.calls
