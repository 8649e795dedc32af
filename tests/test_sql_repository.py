"""SqlRepository and the CLI queries, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import importlib
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import event as sql_event
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError

from rotator.adapters.sql import SqlRepository
from rotator.adapters.sql.schema import make_engine
from rotator.adapters.sql.tables import leases, rotations
from rotator.core.errors import LeaseHeld, LeaseLost, RotationFinished
from rotator.core.model import (
    AuditEvent,
    Failure,
    FailureCode,
    Rotation,
    ScheduleFacts,
    Status,
    Step,
    StoredEvent,
)
from rotator.core.ports import PendingCleanup, RotationRepository
from rotator.core.vocabulary import EventKind
from tests import writes

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
CEST = timezone(timedelta(hours=2))


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def rotation(rotation_id: str = "r1", target: str = "count-prod", **changes: Any) -> Rotation:
    base = Rotation(
        rotation_id=rotation_id, target=target, service_account="sa-1", trigger="manual",
        actor="alice@host", grace_seconds=300.0, started_at=T0,
    )
    return base.evolve(**changes)


def event(kind: EventKind, op_id: str | None = None, rotation_id: str = "r1",
          target: str = "count-prod", **changes: Any) -> AuditEvent:
    return AuditEvent(rotation_id=rotation_id, target=target, step="create", kind=kind,
                      action=changes.pop("action", "create_key"), op_id=op_id, **changes)


def test_satisfies_the_port(repository: SqlRepository) -> None:
    port: RotationRepository = repository
    assert port is repository


# --- rotations ------------------------------------------------------------------------------

def test_rotation_round_trip_with_every_field(repository: SqlRepository) -> None:
    full = rotation(
        step=Step.GRACE, old_key_id="key-old", old_version=3, new_key_id="key-new",
        new_fingerprint="sha256:0123456789ab", new_version=4,
        started_at=datetime(2024, 5, 1, 14, 0, 0, 500, tzinfo=CEST),
        grace_ends_at=T0 + timedelta(minutes=5), finished_at=None,
        reason="scheduled: 90 days", recreate_count=2, grace_seconds=12.5,
    )
    writes.insert_rotation(repository, full)
    got = repository.get_rotation("r1")
    assert got == full
    assert got is not None
    assert got.started_at.tzinfo is UTC
    assert got.started_at == datetime(2024, 5, 1, 12, 0, 0, 500, tzinfo=UTC)

    done = full.evolve(step=Step.DONE, status=Status.COMPLETED,
                       finished_at=T0 + timedelta(minutes=6), reason=None)
    writes.save_rotation(repository, done)
    assert repository.get_rotation("r1") == done
    assert repository.get_rotation("nope") is None


def test_a_failure_round_trips_as_fields(repository: SqlRepository) -> None:
    rot = rotation(
        step=Step.ROLLBACK, rollback_blocked="cannot read Vault: down",
        failure=Failure(Step.STORE, FailureCode.STORE_FAILED, "VaultUnavailable: down"),
        reason="store: VaultUnavailable: down; rollback blocked: cannot read Vault: down")
    writes.insert_rotation(repository, rot)
    assert repository.get_rotation(rot.rotation_id) == rot
    refused = rotation("rot_2", target="other", status=Status.FAILED, step=Step.DONE,
                       reason="dead", failure=Failure(None, FailureCode.UNRECORDED, "dead"))
    writes.insert_rotation(repository, refused)
    assert repository.get_rotation("rot_2") == refused


def test_a_row_from_before_the_failure_fields_has_its_text_only(
        repository: SqlRepository) -> None:
    rot = rotation(status=Status.ROLLED_BACK, step=Step.DONE,
                   reason="verify: x; rollback blocked: y")
    writes.insert_rotation(repository, rot)
    with repository.engine.begin() as conn:
        assert conn.execute(text("SELECT failure_code, rollback_blocked FROM rotations"))\
            .one() == (None, None)
    read = repository.get_rotation(rot.rotation_id)
    assert read is not None and read.failure is None and read.reason == rot.reason


def test_naive_datetimes_are_refused(repository: SqlRepository) -> None:
    with pytest.raises(StatementError, match="naive datetime"):
        writes.insert_rotation(repository, rotation(started_at=datetime(2024, 5, 1, 12)))


def test_saving_an_unknown_rotation_fails(repository: SqlRepository) -> None:
    with pytest.raises(LookupError, match="r9"):
        writes.save_rotation(repository, rotation("r9"))


def test_second_running_rotation_of_a_target_is_refused(repository: SqlRepository) -> None:
    writes.insert_rotation(repository, rotation("r1"))
    with pytest.raises(LeaseHeld, match="count-prod") as info:
        writes.insert_rotation(repository, rotation("r2"))
    assert info.value.context == {"target": "count-prod", "rotation_id": "r1"}
    running = repository.running_rotation("count-prod")
    assert running is not None
    assert running.rotation_id == "r1"
    writes.insert_rotation(repository, rotation("r3", target="other"))


def test_terminal_rotation_does_not_block_a_new_one(repository: SqlRepository) -> None:
    writes.insert_rotation(repository, rotation("r1"))
    writes.save_rotation(repository, rotation("r1", status=Status.ROLLED_BACK, step=Step.DONE))
    assert repository.running_rotation("count-prod") is None
    writes.insert_rotation(repository, rotation("r2"))
    # ...and the old one can never be revived: a finished rotation has one ending.
    with pytest.raises(RotationFinished):
        writes.save_rotation(repository, rotation("r1"))
    assert repository.get_rotation("r1") == rotation("r1", status=Status.ROLLED_BACK,
                                                     step=Step.DONE)


def test_duplicate_rotation_id_is_not_mistaken_for_a_lease(repository: SqlRepository) -> None:
    writes.insert_rotation(repository, rotation("r1"))
    with pytest.raises(IntegrityError):
        writes.insert_rotation(repository, rotation("r1"))


def test_protected_key_ids(repository: SqlRepository) -> None:
    writes.insert_rotation(repository, rotation("r1", target="a", old_key_id="k1", new_key_id="k2"))
    writes.insert_rotation(repository, rotation("r2", target="b", old_key_id="k3"))
    writes.insert_rotation(repository, rotation("r3", target="c", old_key_id="k4", new_key_id="k5"))
    writes.save_rotation(repository, rotation("r3", target="c", old_key_id="k4", new_key_id="k5",
                                      status=Status.COMPLETED))
    writes.insert_rotation(repository, rotation("r4", target="d", service_account="sa-2",
                                        old_key_id="k6"))
    assert repository.protected_key_ids("sa-1", except_rotation="r2") == {"k1", "k2"}
    assert repository.protected_key_ids("sa-1", except_rotation="r1") == {"k3"}
    assert repository.protected_key_ids("sa-2", except_rotation="r1") == {"k6"}
    assert repository.protected_key_ids("sa-3", except_rotation="r1") == set()


# --- the audit trail ------------------------------------------------------------------------

def test_events_are_appended_with_a_time(repository: SqlRepository) -> None:
    before = datetime.now(UTC)
    writes.record(repository, event(EventKind.INTENT, "op1", key_id="k1", request_id="req-1"))
    at = datetime(2024, 5, 1, 15, 0, tzinfo=CEST)
    writes.record(repository, event(EventKind.OUTCOME, "op1", result="ok", key_id="k1",
                            fingerprint="sha256:abcd", vault_version=7, detail="fine", at=at))
    first, second = repository.events()
    assert isinstance(first, StoredEvent)
    assert first.id < second.id
    assert first.at.tzinfo is UTC
    assert before - timedelta(seconds=1) <= first.at <= datetime.now(UTC)
    assert second.at == at
    assert second.to_event() == event(
        EventKind.OUTCOME, "op1", result="ok", key_id="k1", fingerprint="sha256:abcd",
        vault_version=7, detail="fine", at=at,
    )
    assert second.as_dict()["at"] == "2024-05-01T13:00:00+00:00"


@pytest.mark.parametrize("statement", [
    "UPDATE rotation_events SET result = 'tampered'",
    "DELETE FROM rotation_events",
])
def test_the_database_rejects_rewriting_the_audit_trail(
    repository: SqlRepository, statement: str
) -> None:
    writes.record(repository, event(EventKind.NOTE, action="plan"))
    with pytest.raises(DBAPIError, match="rotation_events is append-only"), \
            repository.engine.begin() as conn:
        conn.execute(text(statement))
    assert [e.result for e in repository.events()] == [None]


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_postgres_rejects_truncate_of_the_audit_trail(repository: SqlRepository) -> None:
    with pytest.raises(DBAPIError, match="append-only"), repository.engine.begin() as conn:
        conn.execute(text("TRUNCATE rotation_events"))


def test_open_intents_are_intents_without_outcome(repository: SqlRepository) -> None:
    writes.record(repository, event(EventKind.NOTE, action="plan"))
    writes.record(repository, event(EventKind.INTENT, "op-a"))
    writes.record(repository, event(EventKind.OUTCOME, "op-a", result="ok"))
    writes.record(repository, event(EventKind.INTENT, "op-b", action="store"))
    writes.record(repository, event(EventKind.INTENT, "op-c", action="revoke"))
    writes.record(repository, event(EventKind.OUTCOME, "op-c", rotation_id="r2", result="ok"))
    writes.record(repository, event(EventKind.INTENT, "op-d", rotation_id="r2"))
    assert [(e.op_id, e.action) for e in repository.open_intents("r1")] == [
        ("op-b", "store"), ("op-c", "revoke"),
    ]
    assert all(e.at is not None for e in repository.open_intents("r1"))
    writes.record(repository, event(EventKind.OUTCOME, "op-b", result="unknown"))
    assert [e.op_id for e in repository.open_intents("r1")] == ["op-c"]
    assert [e.op_id for e in repository.open_intents("r2")] == ["op-d"]


# --- leases ---------------------------------------------------------------------------------

def test_lease_lifecycle(repository: SqlRepository) -> None:
    repo = repository
    assert repo.acquire_lease("t", "alice", 30, T0)
    assert not repo.acquire_lease("t", "bob", 30, T0 + timedelta(seconds=10))
    assert repo.acquire_lease("t", "alice", 30, T0 + timedelta(seconds=10))  # re-entrant
    assert not repo.renew_lease("t", "bob", 30, T0 + timedelta(seconds=20))
    assert repo.renew_lease("t", "alice", 30, T0 + timedelta(seconds=20))
    # Renewed until T0+50s: still alice's at T0+45s.
    assert not repo.acquire_lease("t", "bob", 30, T0 + timedelta(seconds=45))
    with repo.engine.connect() as conn:
        row = conn.execute(select(leases)).mappings().one()
    assert (row["holder"], row["acquired_at"]) == ("alice", T0)
    assert row["expires_at"] == T0 + timedelta(seconds=50)

    # Expired: bob takes over; alice can neither renew nor release it any more.
    assert repo.acquire_lease("t", "bob", 30, T0 + timedelta(seconds=51))
    assert not repo.renew_lease("t", "alice", 30, T0 + timedelta(seconds=52))
    repo.release_lease("t", "alice")
    assert not repo.acquire_lease("t", "alice", 30, T0 + timedelta(seconds=53))
    repo.release_lease("t", "bob")
    assert repo.acquire_lease("t", "alice", 30, T0 + timedelta(seconds=54))
    assert repo.acquire_lease("other", "bob", 30, T0 + timedelta(seconds=54))


def test_every_acquisition_is_a_new_generation(repository: SqlRepository) -> None:
    repo = repository
    first = repo.acquire_lease("t", "alice", 30, T0)
    assert first is not None and (first.generation, first.previous_expiry) == (1, None)
    again = repo.acquire_lease("t", "alice", 30, T0 + timedelta(seconds=1))
    assert again is not None and (again.generation, again.previous_expiry) == (2, None)
    assert not repo.confirm_lease(first, 30, T0 + timedelta(seconds=2))   # superseded
    assert repo.confirm_lease(again, 30, T0 + timedelta(seconds=2))       # until T0+32s
    # Lapsed, not released: the take-over learns when, since a call may be in flight.
    bob = repo.acquire_lease("t", "bob", 30, T0 + timedelta(seconds=33))
    assert bob is not None and bob.generation == 3
    assert bob.previous_expiry == T0 + timedelta(seconds=32)
    # Released: free at once, and nothing of its holder is in flight.
    repo.release_lease("t", "bob")
    assert repo.lease_of("t") is None
    carol = repo.acquire_lease("t", "carol", 30, T0 + timedelta(seconds=34))
    assert carol is not None and (carol.generation, carol.previous_expiry) == (4, None)


def test_a_holder_that_was_taken_over_writes_nothing(repository: SqlRepository) -> None:
    repo = repository
    alice = repo.acquire_lease("count-prod", "alice", 30, T0)
    assert alice is not None
    repo.insert_rotation(rotation("r1"), alice)
    repo.record(event(EventKind.INTENT, "op-a"), alice)
    item = PendingCleanup("count-prod", "sa-1", "key-x", "r1", "test")
    repo.add_cleanup(item, T0, alice)
    # Alice freezes past her lease; bob takes the target over.
    bob = repo.acquire_lease("count-prod", "bob", 30, T0 + timedelta(seconds=31))
    assert bob is not None
    before = (repo.get_rotation("r1"), repo.events(), repo.pending_cleanups("count-prod"))
    stale_writes = [
        lambda: repo.save_rotation(rotation("r1", step=Step.CREATE), alice),
        lambda: repo.record(event(EventKind.OUTCOME, "op-a", result="ok"), alice),
        lambda: repo.add_cleanup(replace(item, key_id="key-y"), T0, alice),
        lambda: repo.resolve_cleanup("count-prod", "key-x", T0, alice),
        lambda: repo.insert_rotation(rotation("r2"), alice),
    ]
    for write in stale_writes:
        with pytest.raises(LeaseLost):
            write()
    assert not repo.confirm_lease(alice, 30, T0 + timedelta(seconds=32))
    assert (repo.get_rotation("r1"), repo.events(),
            repo.pending_cleanups("count-prod")) == before
    # Bob's writes land, each stamped with his generation.
    repo.save_rotation(rotation("r1", step=Step.CREATE), bob)
    repo.record(event(EventKind.OUTCOME, "op-a", result="unknown"), bob)
    assert [e.lease_generation for e in repo.events()] == [1, 2]
    with repo.engine.connect() as conn:
        stamped = conn.execute(select(rotations.c.lease_generation)).scalar_one()
    assert stamped == bob.generation


def test_a_rotation_ends_with_its_note_in_one_transaction(repository: SqlRepository) -> None:
    repo = repository
    alice = repo.acquire_lease("count-prod", "alice", 30, T0)
    assert alice is not None
    repo.insert_rotation(rotation("r1"), alice)
    done = rotation("r1", status=Status.COMPLETED, step=Step.DONE, finished_at=T0)
    ending = event(EventKind.NOTE, action="completed", result="completed")
    bob = repo.acquire_lease("count-prod", "bob", 30, T0 + timedelta(seconds=31))
    assert bob is not None
    with pytest.raises(LeaseLost):                 # refused: neither the state nor the note
        repo.save_rotation(done, alice, ending)
    assert repo.events() == [] and repo.get_rotation("r1") == rotation("r1")
    repo.save_rotation(done, bob, ending)
    assert [(e.action, e.lease_generation) for e in repo.events()] == [
        ("completed", bob.generation)]
    assert repo.get_rotation("r1") == done


def test_no_write_of_the_old_holder_lands_after_the_take_over(
        repository: SqlRepository) -> None:
    """A zombie writing as fast as it can while another replica takes over."""
    repo = repository
    alice = repo.acquire_lease("count-prod", "alice", 30, T0)
    assert alice is not None
    stop = threading.Event()
    refused: list[LeaseLost] = []

    def zombie() -> None:
        with contextlib.suppress(LeaseLost):
            while not stop.is_set():
                repo.record(event(EventKind.NOTE, action="zombie"), alice)
        refused.append(LeaseLost("stopped"))

    thread = threading.Thread(target=zombie)
    thread.start()
    try:
        wait_until(lambda: len(repo.events()) >= 5)
        bob = repo.acquire_lease("count-prod", "bob", 30, T0 + timedelta(seconds=31))
        assert bob is not None
        repo.record(event(EventKind.NOTE, action="take_over"), bob)
        thread.join(timeout=10)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert refused, "the old holder was never refused"
    rows = repo.events()
    taken = next(e.id for e in rows if e.action == "take_over")
    assert all(e.lease_generation == 1 for e in rows if e.id < taken)
    assert [e.action for e in rows if e.id > taken] == []


def test_exactly_one_of_eight_racers_wins_a_lease(repository: SqlRepository) -> None:
    racers = 8
    for round_ in range(3):
        target = f"race-{round_}"
        barrier = threading.Barrier(racers)
        results: dict[int, bool] = {}   # racer -> whether it took the lease
        errors: list[BaseException] = []

        def race(i: int, target: str = target, barrier: threading.Barrier = barrier,
                 results: dict[int, bool] = results,
                 errors: list[BaseException] = errors) -> None:
            try:
                with repository.engine.connect() as own:  # each racer has its connection
                    own.exec_driver_sql("SELECT 1")
                    barrier.wait(timeout=10)
                    won = repository.acquire_lease(target, f"replica-{i}", 30, T0)
                    results[i] = won is not None
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=race, args=(i,)) for i in range(racers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not errors
        assert sorted(results.values()) == [False] * (racers - 1) + [True]


# --- pending cleanups -----------------------------------------------------------------------

def test_cleanup_lifecycle(repository: SqlRepository) -> None:
    item = PendingCleanup(target="t", service_account="sa-1", key_id="k1", rotation_id="r1",
                          reason="revoke failed: 503")
    other = PendingCleanup(target="t", service_account="sa-1", key_id="k2", rotation_id="r2",
                           reason="orphan")
    writes.add_cleanup(repository, item, T0)
    writes.add_cleanup(repository, item, T0 + timedelta(seconds=1))  # idempotent while unresolved
    writes.add_cleanup(repository, other, T0 + timedelta(seconds=2))
    writes.add_cleanup(repository, PendingCleanup("u", "sa-2", "k1", "r3", "orphan"), T0)
    assert repository.pending_cleanups("t") == [item, other]
    writes.resolve_cleanup(repository, "t", "k1", T0 + timedelta(seconds=3))
    writes.resolve_cleanup(repository, "t", "k1", T0 + timedelta(seconds=4))  # no-op
    assert repository.pending_cleanups("t") == [other]
    assert [c.target for c in repository.all_pending_cleanups()] == ["u", "t"]
    writes.add_cleanup(repository, item, T0 + timedelta(seconds=5))  # back again after resolution
    assert repository.pending_cleanups("t") == [other, item]
    assert repository.pending_cleanups("nobody") == []


# --- queries for the CLI ---------------------------------------------------------------------

def test_event_queries(repository: SqlRepository) -> None:
    for i in range(5):
        writes.record(repository, event(EventKind.NOTE, target="a" if i % 2 == 0 else "b",
                                action=f"n{i}", at=T0 + timedelta(minutes=i)))
    assert [e.action for e in repository.events()] == ["n0", "n1", "n2", "n3", "n4"]
    assert [e.action for e in repository.events(target="a")] == ["n0", "n2", "n4"]
    assert [e.action for e in repository.events(since=T0 + timedelta(minutes=2))] == [
        "n2", "n3", "n4",
    ]
    assert [e.action for e in repository.events(limit=2)] == ["n3", "n4"]
    assert [e.action for e in repository.events(target="a", since=T0, limit=2)] == ["n2", "n4"]
    assert repository.events(limit=0) == []
    assert repository.events(target="zzz") == []


def test_event_filters_of_the_audit_command(repository: SqlRepository) -> None:
    # Three rotations of two targets, started by `rotate`, `run --rotate` and a schedule.
    for i, (rid, target, trigger) in enumerate([("r1", "a", "manual"),
                                                ("r2", "b", "run_rotate"),
                                                ("r3", "a", "schedule")]):
        writes.insert_rotation(repository, rotation(rid, target, trigger=trigger))
        for n in range(2):
            writes.record(repository, event(EventKind.NOTE, rotation_id=rid, target=target,
                                            action=f"{rid}.{n}",
                                            at=T0 + timedelta(minutes=2 * i + n)))
        writes.save_rotation(repository, rotation(rid, target, trigger=trigger,
                                                  status=Status.COMPLETED, step=Step.DONE))

    def actions(**filters: Any) -> list[str]:
        return [e.action for e in repository.events(**filters)]

    assert actions(until=T0 + timedelta(minutes=1)) == ["r1.0", "r1.1"]     # included
    assert actions(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=2)) == [
        "r1.1", "r2.0"]
    assert actions(rotation_id="r3") == ["r3.0", "r3.1"]
    assert actions(triggers=["run_rotate"]) == ["r2.0", "r2.1"]
    assert actions(triggers=["manual", "run_rotate"], target="a") == ["r1.0", "r1.1"]
    assert actions(triggers=["first_rotation"]) == []
    assert actions(triggers=["schedule"], limit=1) == ["r3.1"]
    streamed = repository.stream_events(until=T0 + timedelta(minutes=4), triggers=["schedule"])
    assert [e.action for e in streamed] == ["r3.0"]


def test_rotation_queries(repository: SqlRepository) -> None:
    def at(minutes: int) -> datetime:
        return T0 + timedelta(minutes=minutes)

    repo = repository
    writes.insert_rotation(repo, rotation("a1", target="a", started_at=at(0)))
    writes.save_rotation(repo, rotation("a1", target="a", started_at=at(0), status=Status.COMPLETED,
                                step=Step.DONE, finished_at=at(5)))
    writes.insert_rotation(repo, rotation("a2", target="a", started_at=at(10)))
    writes.save_rotation(repo, rotation("a2", target="a", started_at=at(10),
                                        status=Status.COMPLETED, step=Step.DONE,
                                        finished_at=at(15)))
    writes.insert_rotation(repo, rotation("a3", target="a", started_at=at(20)))
    writes.save_rotation(repo, rotation("a3", target="a", started_at=at(20), status=Status.FAILED,
                                step=Step.DONE, finished_at=at(21)))
    writes.insert_rotation(repo, rotation("a4", target="a", started_at=at(30)))
    writes.insert_rotation(repo, rotation("b1", target="b", started_at=at(25)))
    writes.insert_rotation(repo, rotation("c1", target="c", started_at=at(1)))
    writes.save_rotation(repo, rotation("c1", target="c", started_at=at(1),
                                        status=Status.ROLLED_BACK, step=Step.DONE))

    latest = repo.latest_rotations()
    assert {t: r.rotation_id for t, r in latest.items()} == {"a": "a4", "b": "b1", "c": "c1"}
    assert latest["a"] == repo.get_rotation("a4")

    last = repo.last_completed("a")
    assert last is not None
    assert (last.rotation_id, last.finished_at) == ("a2", at(15))
    assert repo.last_completed("b") is None

    assert [r.rotation_id for r in repo.rotations()] == ["a1", "c1", "a2", "a3", "b1", "a4"]
    assert [r.rotation_id for r in repo.rotations(target="a")] == ["a1", "a2", "a3", "a4"]
    assert [r.rotation_id for r in repo.rotations(status=Status.COMPLETED)] == ["a1", "a2"]
    assert [r.rotation_id for r in repo.rotations("a", Status.RUNNING)] == ["a4"]
    assert [r.rotation_id for r in repo.all_running()] == ["b1", "a4"]


def test_public_api_is_exported() -> None:
    for name in ("", ".tables", ".schema", ".queries", ".repository"):
        module = importlib.import_module(f"rotator.adapters.sql{name}")
        for attr in module.__all__:
            assert hasattr(module, attr), f"{module.__name__}.{attr}"


# --- schedule facts, one target and all at once ------------------------------------------

def _history(repository: SqlRepository, target: str,
             ends: list[tuple[Status, int]]) -> None:
    """Rotations of ``target`` started an hour apart, each ended ``status`` ``minutes``
    after it started (a running one left running)."""
    for n, (status, minutes) in enumerate(ends):
        started = T0 + timedelta(hours=n)
        rid = f"{target}-{n}"
        writes.insert_rotation(repository, rotation(rid, target, started_at=started))
        if status is not Status.RUNNING:
            writes.save_rotation(repository, rotation(
                rid, target, started_at=started, status=status, step=Step.DONE,
                finished_at=started + timedelta(minutes=minutes)))


def test_all_schedule_facts_are_each_target_s_schedule_facts(
        repository: SqlRepository) -> None:
    done, failed, rolled, running = (Status.COMPLETED, Status.FAILED, Status.ROLLED_BACK,
                                     Status.RUNNING)
    histories = {
        "never-done": [(failed, 1), (rolled, 2)],
        "done-once": [(done, 5)],
        "done-then-failing": [(failed, 1), (done, 3), (failed, 4), (rolled, 9)],
        "failed-then-done": [(rolled, 1), (failed, 2), (done, 7)],
        "done-twice-then-running": [(done, 1), (done, 2), (running, 0)],
    }
    for target, ends in histories.items():
        _history(repository, target, ends)
    everything = repository.all_schedule_facts()
    assert set(everything) == set(histories)
    for target in histories:
        assert everything[target] == repository.schedule_facts(target), target
    assert everything["done-then-failing"].failures_since == 2
    assert everything["done-then-failing"].last_failure_at == T0 + timedelta(hours=3,
                                                                             minutes=9)
    assert everything["never-done"].last_completed is None
    assert everything["done-twice-then-running"].last_completed is not None
    assert everything["done-twice-then-running"].last_completed.rotation_id == \
        "done-twice-then-running-1"
    assert repository.schedule_facts("no-history") == ScheduleFacts(None, 0, None)


def test_sixteen_threads_at_once_reuse_their_connections(migrated_url: str) -> None:
    """Sixteen workers' transactions open sixteen connections at most, then reuse them (a
    pool of 5 closed and reopened one for most transactions: "pool is full")."""
    engine = make_engine(migrated_url)
    opened = []
    sql_event.listen(engine, "connect", lambda *_: opened.append(1))
    repo = SqlRepository(engine)
    start = threading.Barrier(16)

    def work(n: int) -> None:
        start.wait()
        for _ in range(10):
            repo.lease_of(f"t{n}")
            time.sleep(0.01)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    engine.dispose()
    assert 0 < len(opened) <= 16
