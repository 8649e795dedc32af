"""Audit writes keep one chain per target, also when writes of one target race."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from rotator.adapters.sql.repository import SqlRepository
from rotator.core.model import AuditEvent, Rotation
from rotator.core.vocabulary import EventKind
from tests import writes

WRITERS, EACH = 4, 15


def test_racing_writes_of_one_target_make_one_chain(repository: SqlRepository) -> None:
    lease = repository.acquire_lease("app", "tests", 600, datetime.now(UTC))
    assert lease is not None
    start = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        start.wait()
        try:
            for i in range(EACH):
                repository.record(AuditEvent(
                    rotation_id=f"rot_{writer}", target="app", step="create",
                    kind=EventKind.NOTE, action="started", detail=f"{writer}/{i}"), lease)
        except BaseException as exc:   # reported below, all writers joined
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    report = repository.verify_chains()
    assert (report.events, report.breaks) == (WRITERS * EACH, [])
    assert [e.chain_seq for e in repository.events("app")] == list(range(1, WRITERS * EACH + 1))


def test_on_sqlite_a_write_waits_for_the_process_s_write_in_progress(
        repository: SqlRepository) -> None:
    """SQLite's one writer is taken in turn by this process's threads (so none starves on
    the busy handler and no two read one chain head); PostgreSQL's writers do not queue."""
    lease = repository.acquire_lease("app", "tests", 600, datetime.now(UTC))
    assert lease is not None
    done = threading.Event()

    def write() -> None:
        repository.record(AuditEvent(rotation_id="rot_1", target="app", step="create",
                                     kind=EventKind.NOTE, action="started"), lease)
        done.set()

    sqlite = repository.engine.dialect.name == "sqlite"
    with repository.writes_held():
        writer = threading.Thread(target=write)
        writer.start()
        assert done.wait(0.5) is not sqlite
    writer.join(10)
    assert done.is_set()
    assert [e.chain_seq for e in repository.events("app")] == [1]


def test_the_ending_row_of_a_saved_rotation_is_chained(repository: SqlRepository) -> None:
    at = datetime.now(UTC)
    rotation = Rotation(rotation_id="rot_1", target="app", service_account="sa_1",
                        trigger="manual", actor="me", grace_seconds=60, started_at=at)
    writes.insert_rotation(repository, rotation)
    writes.record(repository, AuditEvent(rotation_id="rot_1", target="app", step="plan",
                                         kind=EventKind.NOTE, action="started"))
    with writes.lease(repository, "app") as held:
        repository.save_rotation(rotation, held, ending=AuditEvent(
            rotation_id="rot_1", target="app", step="done", kind=EventKind.NOTE,
            action="completed"))
    assert [e.chain_seq for e in repository.events("app")] == [1, 2]
    assert repository.verify_chains("app").breaks == []
