"""The notification outbox on SQLite and PostgreSQL: notices written in the transaction of
the state change that causes them, once per sink and condition, claimed by one replica."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from rotator.adapters.sql import SqlRepository
from rotator.adapters.sql.schema import make_engine
from rotator.adapters.sql.tables import rotations
from rotator.core.errors import LeaseLost, ProviderUnavailable
from rotator.core.model import AuditEvent, Failure, FailureCode, Rotation, Status, Step
from rotator.core.notices import Notice, NoticeEvent, Route
from rotator.core.vocabulary import AuditAction, AuditResult, EventKind
from rotator.daemon.watch import Thresholds, Watch
from rotator.scheduling.schedule import Schedule
from tests import writes
from tests.test_daemon_sweep import DAY, START, Fleet

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ROUTES = (Route("ops", frozenset(NoticeEvent)),
          Route("chat", frozenset({NoticeEvent.ROTATION_ROLLED_BACK})))


@pytest.fixture
def repo(migrated_url: str) -> Iterator[SqlRepository]:
    engine = make_engine(migrated_url)
    try:
        yield SqlRepository(engine, routes=ROUTES)
    finally:
        engine.dispose()


def _rotation(**changes: object) -> Rotation:
    return Rotation(rotation_id="rot_1", target="billing", service_account="sa_1",
                    trigger="schedule", actor="scheduler", grace_seconds=60.0,
                    started_at=T0, step=Step.VERIFY, new_key_id="key_new").evolve(**changes)


ROLLED_BACK = {"status": Status.ROLLED_BACK, "step": Step.DONE, "finished_at": T0,
               "failure": Failure(Step.VERIFY, FailureCode.PROBE_FAILED, "no auth"),
               "reason": "verify: no auth"}


def test_a_rolled_back_rotation_enqueues_once_per_sink_in_its_own_save(
        repo: SqlRepository) -> None:
    writes.insert_rotation(repo, _rotation())
    assert repo.outbox.rows() == []
    with writes.lease(repo, "billing") as lease:
        repo.save_rotation(_rotation(**ROLLED_BACK), lease)
    rows = repo.outbox.rows()
    assert sorted((r.sink, r.event, r.dedupe_key) for r in rows) == [
        ("chat", "rotation_rolled_back", "rotation_rolled_back:rot_1"),
        ("ops", "rotation_rolled_back", "rotation_rolled_back:rot_1")]
    assert len({r.delivery_id for r in rows}) == 2
    # The same notice again (a second enqueue of the condition) is no new row.
    assert repo.outbox.enqueue([Notice(NoticeEvent.ROTATION_ROLLED_BACK, "billing",
                                       "rotation_rolled_back:rot_1", "again", T0)], T0) == 0
    assert repo.outbox.pending() == {"ops": 1, "chat": 1}


def test_a_blocked_rollback_saved_again_and_again_is_one_notice(repo: SqlRepository) -> None:
    writes.insert_rotation(repo, _rotation())
    blocked = _rotation(step=Step.ROLLBACK, rollback_blocked="cannot read Vault: down")
    for _ in range(3):                 # the runner retries, saving each blocked attempt
        writes.save_rotation(repo, blocked)
    assert [(r.sink, r.event) for r in repo.outbox.rows()] == [("ops", "rollback_blocked")]


def test_the_notice_and_the_state_change_commit_or_vanish_together(
        repo: SqlRepository, monkeypatch: pytest.MonkeyPatch) -> None:
    writes.insert_rotation(repo, _rotation())

    def crash(*_args: object) -> int:
        raise RuntimeError("killed between the state change and the enqueue")

    monkeypatch.setattr(repo.outbox, "add", crash)
    with writes.lease(repo, "billing") as lease, pytest.raises(RuntimeError):
        repo.save_rotation(_rotation(**ROLLED_BACK), lease)
    with repo.engine.connect() as conn:
        assert conn.execute(select(rotations.c.status)).scalar() == "running"
    monkeypatch.undo()
    # A save refused for a lost lease writes no notice either.
    stale = repo.acquire_lease("billing", "old", 60, T0)
    assert stale is not None
    repo.release_lease("billing", "old")
    with writes.lease(repo, "billing"):
        pass    # another holder took the lease since: a new generation
    with pytest.raises(LeaseLost):
        repo.save_rotation(_rotation(**ROLLED_BACK), stale)
    assert repo.outbox.rows() == []


def test_a_probe_finding_the_deleted_key_alive_enqueues_with_its_audit_row(
        repo: SqlRepository) -> None:
    writes.insert_rotation(repo, _rotation())
    writes.record(repo, AuditEvent(rotation_id="rot_1", target="billing", step="revoke",
                                   kind=EventKind.NOTE, action=AuditAction.PROBE_REVOKED,
                                   result=AuditResult.STILL_VALID, key_id="key_old"))
    assert [(r.sink, r.event) for r in repo.outbox.rows()] == [("ops", "revoked_key_alive")]


def test_one_claim_per_row_among_racing_replicas_then_attempts_are_recorded(
        repo: SqlRepository) -> None:
    notices = [Notice(NoticeEvent.STRAY_KEY, "billing", f"stray_key:billing:k{i}",
                      f"stray key k{i}", T0) for i in range(12)]
    assert repo.outbox.enqueue(notices, T0) == 12      # ops only: chat wants rollbacks
    now = T0 + timedelta(seconds=1)
    claims: dict[str, list[int]] = {}
    start = threading.Barrier(4)

    def replica(name: str) -> None:
        start.wait()
        claims[name] = [d.id for d in repo.outbox.claim(name, now, 30, limit=12)]

    threads = [threading.Thread(target=replica, args=(f"r{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [i for got in claims.values() for i in got]
    assert len(ids) == len(set(ids)) == 12
    # Claimed: nobody else gets them until the claim lapses.
    assert repo.outbox.claim("late", now + timedelta(seconds=29), 30) == []
    (first, *rest) = repo.outbox.claim("late", now + timedelta(seconds=31), 30, limit=12)
    repo.outbox.failed(first, "late", "the receiver answered HTTP 503",
                       now + timedelta(minutes=5))
    for delivery in rest:
        repo.outbox.delivered(delivery, now + timedelta(seconds=32))
    rows = {r.delivery_id: r for r in repo.outbox.rows()}
    failed = rows[first.delivery_id]
    assert (failed.attempts, failed.last_error, failed.delivered_at) == (
        1, "the receiver answered HTTP 503", None)
    assert failed.next_attempt_at == now + timedelta(minutes=5)
    assert repo.outbox.pending() == {"ops": 1, "chat": 0}
    # Not due before its next attempt time; due, and claimed again, after it.
    assert repo.outbox.claim("late", now + timedelta(minutes=4), 30) == []
    (again,) = repo.outbox.claim("late", now + timedelta(minutes=6), 30)
    assert (again.delivery_id, again.attempts) == (first.delivery_id, 1)


def test_the_sweep_enqueues_overdue_and_a_key_too_old_once_each_across_restarts(
        migrated_url: str) -> None:
    engine = make_engine(migrated_url)
    try:
        fleet = Fleet(lambda clock: SqlRepository(engine, clock=clock, routes=ROUTES),
                      {"app": Schedule(every=DAY, max_key_age=2 * DAY)}, grace=0)
        repo = fleet.repo
        assert isinstance(repo, SqlRepository)

        def watching() -> None:
            fleet.sweeper.watch = Watch(repo.outbox.enqueue, Thresholds(3600, 3600))

        watching()
        fleet.sweep()                                  # the first rotation completes
        fleet.provider.fail["create_key"] = ProviderUnavailable("count is down")
        for hours in (24, 26, 49, 50):                 # each due retry fails
            fleet.at(START + timedelta(hours=hours))
        fleet.restart()                                # a new process: nothing remembered
        watching()
        fleet.at(START + timedelta(hours=52))
        events = [r.event for r in repo.outbox.rows() if r.sink == "ops"]
        failures = len([r for r in repo.rotations("app") if r.status is not Status.COMPLETED])
    finally:
        engine.dispose()
    assert failures >= 3
    assert sorted(set(events)) == ["key_too_old", "rotation_rolled_back", "target_overdue"]
    assert events.count("target_overdue") == events.count("key_too_old") == 1
    assert events.count("rotation_rolled_back") == failures
