"""The Alembic migrations and schema checks, on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import DBAPIError

from rotator.adapters.sql import schema, tables
from rotator.adapters.sql.repository import SqlRepository
from rotator.adapters.sql.schema import (
    PG_IDLE_IN_TRANSACTION,
    alembic_config,
    check_schema,
    current_revision,
    head_revision,
    make_engine,
    migrations_dir,
    upgrade,
)
from rotator.app.orphans import Configured, orphans
from rotator.core.errors import RotationFinished, SchemaError
from rotator.core.grace import GracePolicy
from rotator.core.model import AuditEvent, Rotation, SecretRef, Status
from rotator.core.ports import PendingCleanup
from rotator.core.vocabulary import EventKind
from tests.support import DATABASE_ONLY_CONFIG

ROTATOR_TABLES = {"rotations", "rotation_events", "leases", "pending_cleanups",
                  "notification_outbox"}

SECOND_REVISION = '''"""A later revision, only for tests."""
import sqlalchemy as sa
from alembic import op

revision = "9999"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("extra", sa.Column("id", sa.Integer(), primary_key=True))


def downgrade():
    op.drop_table("extra")
'''


def _stamp(url: str, revision: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"
            ))
            conn.execute(text("INSERT INTO alembic_version VALUES (:v)"), {"v": revision})
    finally:
        engine.dispose()


def _check(url: str) -> None:
    engine = make_engine(url)
    try:
        check_schema(engine)
    finally:
        engine.dispose()


def test_migrations_dir_is_found_from_the_package() -> None:
    assert (migrations_dir() / "env.py").is_file()
    assert (migrations_dir() / "versions" / "0001_initial.py").is_file()
    assert head_revision() == schema.SCHEMA_HEAD


def test_upgrade_from_empty(database_url: str) -> None:
    assert current_revision(database_url) is None
    assert upgrade(database_url) == head_revision()
    assert current_revision(database_url) == head_revision()
    engine = make_engine(database_url)
    try:
        names = set(inspect(engine).get_table_names())
        assert ROTATOR_TABLES | {"alembic_version"} <= names
    finally:
        engine.dispose()


def test_upgrade_twice_is_a_no_op(database_url: str) -> None:
    upgrade(database_url)
    assert upgrade(database_url) == head_revision()
    _check(database_url)




def test_concurrent_upgrades_all_succeed(database_url: str, tmp_path: Path) -> None:
    # Replicas' init containers run `rotator db upgrade` at the same moment.
    config = tmp_path / "rotator.toml"
    config.write_text(DATABASE_ONLY_CONFIG.format(url=database_url))
    argv = [sys.executable, "-m", "rotator", "db", "upgrade", "--config", str(config)]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(3)]
    outputs = [proc.communicate(timeout=60)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], outputs
    assert current_revision(database_url) == head_revision()


def test_an_unreachable_database_is_exit_3_without_a_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rotator.cli.main import main  # noqa: PLC0415
    from rotator.devtools.devvault import free_port  # noqa: PLC0415

    config = tmp_path / "rotator.toml"
    unreachable = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/x"
    config.write_text(DATABASE_ONLY_CONFIG.format(url=unreachable))
    assert main(["db", "upgrade", "--config", str(config)]) == 3
    err = capsys.readouterr().err
    assert "rotator: database error: OperationalError" in err and "Traceback" not in err


def _migrate(engine: Engine, step: Callable[[Config, str], None], revision: str) -> None:
    """Run an Alembic command to ``revision`` in one transaction of ``engine``."""
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        step(cfg, revision)


def test_downgrade_to_base_and_up_again(migrated_url: str) -> None:
    engine = make_engine(migrated_url)
    try:
        _migrate(engine, command.downgrade, "base")
        assert ROTATOR_TABLES.isdisjoint(inspect(engine).get_table_names())
        _migrate(engine, command.upgrade, "head")
        check_schema(engine)
    finally:
        engine.dispose()


def _insert_finished(conn: Connection, status: str, at: datetime, rotation_id: str = "rot_1",
                     trigger: str = "manual", *, target: str = "app",
                     step: str = "done") -> None:
    """A finished rotation (``rot_1``, manual) of ``app`` by ``me``, in the columns of 0002
    (``status`` running and a ``step``: one in flight)."""
    conn.execute(text(
        "INSERT INTO rotations (rotation_id, target, service_account, trigger, actor,"
        " grace_seconds, started_at, step, status, recreate_count)"
        " VALUES (:id, :target, 'sa_1', :trigger, 'me', 60, :at, :step, :status, 0)"),
        {"id": rotation_id, "trigger": trigger, "at": at, "status": status, "target": target,
         "step": step})


def test_0002_keeps_the_rows_written_at_0001_and_reads_them_as_text_only(
        database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        _migrate(engine, command.upgrade, "0001")
        with engine.begin() as conn:
            # A rolled-back rotation as 0001 stored it: its failure is the reason text.
            conn.execute(text(
                "INSERT INTO rotations (rotation_id, target, service_account, trigger, actor,"
                " grace_seconds, started_at, step, status, reason, recreate_count)"
                " VALUES ('rot_1', 'app', 'sa_1', 'manual', 'me', 60, :at, 'done',"
                " 'rolled_back', 'verify: x; rollback blocked: y', 0)"),
                {"at": datetime(2026, 11, 1, tzinfo=UTC)})
        _migrate(engine, command.upgrade, "head")
        check_schema(engine)
        read = SqlRepository(engine).get_rotation("rot_1")
        assert read is not None and read.status is Status.ROLLED_BACK
        assert (read.reason, read.failure, read.rollback_blocked) == (
            "verify: x; rollback blocked: y", None, None)
    finally:
        engine.dispose()


def test_0003_keeps_leases_and_rows_written_at_0002_and_fences_from_there(
        database_url: str) -> None:
    engine = make_engine(database_url)
    at = datetime(2026, 11, 1, tzinfo=UTC)
    try:
        _migrate(engine, command.upgrade, "0002")
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO leases (target, holder, acquired_at, expires_at)"
                " VALUES ('app', 'old-replica', :at, :at)"), {"at": at})
            _insert_finished(conn, "completed", at)
        _migrate(engine, command.upgrade, "head")
        check_schema(engine)
        repo = SqlRepository(engine)
        # The lapsed lease of 0002 is taken over as the next generation...
        lease = repo.acquire_lease("app", "new-replica", 30, at + timedelta(seconds=1))
        assert lease is not None and lease.generation == 1
        assert lease.previous_expiry == at
        # ...and the rotation 0002 finished stays finished.
        with pytest.raises(RotationFinished):
            repo.save_rotation(Rotation(
                rotation_id="rot_1", target="app", service_account="sa_1", trigger="manual",
                actor="me", grace_seconds=60, started_at=at), lease)
        with pytest.raises(DBAPIError, match="a finished rotation never changes"), \
                engine.begin() as conn:
            conn.execute(text("UPDATE rotations SET status = 'running'"))
    finally:
        engine.dispose()


def test_0005_keeps_rows_written_at_0003_with_no_manual_reason(database_url: str) -> None:
    engine = make_engine(database_url)
    at = datetime(2026, 11, 1, tzinfo=UTC)
    try:
        _migrate(engine, command.upgrade, "0003")
        with engine.begin() as conn:
            _insert_finished(conn, "rolled_back", at)
        _migrate(engine, command.upgrade, "head")
        read = SqlRepository(engine).get_rotation("rot_1")
        assert read is not None and read.manual_reason is None
        with engine.connect() as conn:
            manual = conn.execute(text("SELECT rotation_id, actor, reason FROM"
                                       " audit_manual_rotations")).all()
            failed = conn.execute(text("SELECT rotation_id FROM audit_failed_rotations"))
            assert [tuple(m) for m in manual] == [("rot_1", "me", None)]
            assert failed.scalars().all() == ["rot_1"]
    finally:
        engine.dispose()


def test_0008_reads_older_rows_without_usage_grace_and_keeps_a_rotations_policy(
        database_url: str) -> None:
    engine = make_engine(database_url)
    at = datetime(2026, 11, 1, tzinfo=UTC)
    try:
        _migrate(engine, command.upgrade, "0005")
        with engine.begin() as conn:
            _insert_finished(conn, "completed", at)
        _migrate(engine, command.upgrade, "head")
        repo = SqlRepository(engine)
        old = repo.get_rotation("rot_1")
        assert old is not None and old.usage_grace is None
        lease = repo.acquire_lease("app2", "tests", 30, datetime.now(UTC))
        assert lease is not None
        policy = GracePolicy(quiet_period=90.5, max_grace=3600)
        repo.insert_rotation(Rotation("rot_2", "app2", "sa_2", "schedule", "d", 60, at,
                                      usage_grace=policy), lease)
        read = repo.get_rotation("rot_2")
        assert read is not None and read.usage_grace == policy
    finally:
        engine.dispose()


def test_0009_records_provider_and_vault_ref_and_older_running_rows_stay_report_only(
        database_url: str) -> None:
    engine = make_engine(database_url)
    at = datetime(2026, 11, 1, tzinfo=UTC)
    try:
        _migrate(engine, command.upgrade, "0008")
        with engine.begin() as conn:
            # A rotation in flight, and a queued deletion, as 0008 stored them.
            _insert_finished(conn, "running", at, "rot_old", target="gone", step="grace")
            _insert_finished(conn, "completed", at, "rot_old2", target="gone2")
            conn.execute(text(
                "INSERT INTO pending_cleanups (target, service_account, key_id, rotation_id,"
                " reason, created_at) VALUES ('gone2', 'sa_1', 'key_2', 'rot_old2', 'x', :at)"),
                {"at": at})
        _migrate(engine, command.upgrade, "head")
        check_schema(engine)
        repo = SqlRepository(engine)
        old = repo.get_rotation("rot_old")
        assert old is not None and (old.provider, old.vault_ref) == (None, None)
        [queued] = repo.all_pending_cleanups()
        assert queued.provider is None
        # Their provider configured, both stay report-only: SQL cannot say how to finish.
        found = orphans(repo, Configured({}, {"count": None}))
        assert [(o.target, o.finishable) for o in found] == [("gone", False), ("gone2", False)]
        assert "started before revision 0009" in found[0].detail
        assert "queued before revision 0009" in found[1].detail

        # A rotation and a deletion written now record them.
        lease = repo.acquire_lease("app", "tests", 30, datetime.now(UTC))
        assert lease is not None
        ref = SecretRef("kv", "teams/app", "token")
        repo.insert_rotation(Rotation("rot_new", "app", "sa_3", "schedule", "d", 60, at,
                                      provider="count", vault_ref=ref), lease)
        repo.add_cleanup(PendingCleanup("app", "sa_3", "key_3", "rot_new", "y", "count"),
                         datetime.now(UTC), lease)
        new = repo.get_rotation("rot_new")
        assert new is not None and (new.provider, new.vault_ref) == ("count", ref)
        assert repo.pending_cleanups("app")[0].provider == "count"
        # ...and, their target out of the config, the next run finishes both.
        app = [o for o in orphans(repo, Configured({}, {"count": None})) if o.target == "app"]
        assert [(o.rotation_id, o.key_id, o.finishable) for o in app] == [
            ("rot_new", None, True), ("rot_new", "key_3", True)]
        _migrate(engine, command.downgrade, "0008")
        columns = {c["name"] for c in inspect(engine).get_columns("rotations")}
        assert {"provider", "vault_mount", "vault_path", "vault_field"}.isdisjoint(columns)
        with pytest.raises(DBAPIError, match="a finished rotation never changes"), \
                engine.begin() as conn:
            conn.execute(text("UPDATE rotations SET actor = 'x' WHERE rotation_id = 'rot_old2'"))
    finally:
        engine.dispose()


def _manual_rotations(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(text(
            "SELECT rotation_id FROM audit_manual_rotations")).scalars())


def test_0007_lists_both_kinds_of_manual_rotation_and_the_rows_written_before(
        database_url: str) -> None:
    engine, at = make_engine(database_url), datetime(2026, 11, 1, tzinfo=UTC)
    try:
        _migrate(engine, command.upgrade, "0005")
        with engine.begin() as conn:
            # Before 0007, `manual` was `rotate` or `run --rotate`: listed still.
            _insert_finished(conn, "failed", at, "rot_cli_before", "manual")
            _insert_finished(conn, "failed", at, "rot_scheduled", "schedule")
        _migrate(engine, command.upgrade, "0007")
        with engine.begin() as conn:
            _insert_finished(conn, "failed", at, "rot_cli", "manual")
            _insert_finished(conn, "failed", at, "rot_run", "run_rotate")
            _insert_finished(conn, "failed", at, "rot_first", "first_rotation")
        assert _manual_rotations(engine) == ["rot_cli", "rot_cli_before", "rot_run"]
        _migrate(engine, command.downgrade, "0005")
        assert _manual_rotations(engine) == ["rot_cli", "rot_cli_before"]
    finally:
        engine.dispose()


def _key_lifetimes_of_app(engine: Engine) -> tuple[list[str], list[tuple[object, ...]]]:
    """The plan and the rows of an auditor's one-target question (docs/audit.md)."""
    question = "SELECT * FROM audit_key_lifetimes WHERE target = 'app'"
    with engine.connect() as conn:
        plan = list(conn.execute(text(f"EXPLAIN {question}")).scalars())
        rows = [tuple(r) for r in conn.execute(text(f"{question} ORDER BY key_id"))]
    return plan, rows


def _scans_of_rotations(plan: list[str]) -> list[str]:
    """The line after each scan of ``rotations``: its index condition, or its filter."""
    return [plan[i + 1].strip() for i, line in enumerate(plan) if " on rotations r" in line]


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_0010_reads_one_targets_key_lifetimes_by_its_index_and_answers_the_same(
        database_url: str) -> None:
    engine, at = make_engine(database_url), datetime(2026, 11, 1, tzinfo=UTC)
    try:
        _migrate(engine, command.upgrade, "0009")
        with engine.begin() as conn:
            for n, target in enumerate(["app", "app", "other"]):
                conn.execute(text(
                    "INSERT INTO rotations (rotation_id, target, service_account, trigger,"
                    " actor, grace_seconds, started_at, step, status, recreate_count,"
                    " new_key_id, old_key_id) VALUES (:id, :target, 'sa_1', 'schedule',"
                    " 'me', 60, :at, 'done', 'completed', 0, :new, :old)"),
                    {"id": f"rot_{n}", "target": target, "at": at + timedelta(hours=n),
                     "new": f"key_{n}", "old": f"key_{n}_old"})
        before, rows = _key_lifetimes_of_app(engine)
        # Every target's completed rotations, materialized before the filter applies.
        assert any("CTE ordered" in line for line in before)
        assert len(rows) == 3
        _migrate(engine, command.upgrade, "0010")
        after, rows_after = _key_lifetimes_of_app(engine)
        assert rows_after == rows
        assert not any("CTE " in line for line in after)
        assert _scans_of_rotations(after), after
        assert all(line == "Index Cond: ((target)::text = 'app'::text)"
                   for line in _scans_of_rotations(after)), after
        _migrate(engine, command.downgrade, "0009")
        assert any("CTE ordered" in line for line in _key_lifetimes_of_app(engine)[0])
    finally:
        engine.dispose()


_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_0005_leaves_every_role_but_the_owner_only_select_and_insert_on_the_audit_trail(
        database_url: str) -> None:
    # Whatever was granted before (a default privilege, a GRANT ALL by hand), to a role or
    # to PUBLIC: from 0005 on, only the owner may change the audit trail.
    engine = make_engine(database_url)
    role = f"t_writer_{uuid.uuid4().hex[:12]}"
    try:
        _migrate(engine, command.upgrade, "0003")
        with engine.begin() as conn:
            conn.execute(text(f'CREATE ROLE "{role}"'))
            conn.execute(text(f"GRANT ALL ON rotation_events, rotations, pending_cleanups,"
                              f' alembic_version TO "{role}", PUBLIC'))
        _migrate(engine, command.upgrade, "0005")
        with engine.begin() as conn:    # an auditor's grant, which 0007 must keep
            conn.execute(text(f'GRANT SELECT ON audit_manual_rotations TO "{role}"'))
        _migrate(engine, command.upgrade, "head")
        with engine.connect() as conn:
            def held(table: str, grantee: str) -> set[str]:
                return {p for p in _PRIVILEGES if conn.execute(text(
                    "SELECT has_table_privilege(:who, :table, :privilege)"),
                    {"who": grantee, "table": table, "privilege": p}).scalar()}

            def public(table: str) -> set[str]:
                return set(conn.execute(text(
                    "SELECT a.privilege_type FROM pg_class c, aclexplode(c.relacl) a"
                    " WHERE c.oid = CAST(:table AS regclass) AND a.grantee = 0"),
                    {"table": table}).scalars())

            assert held("rotation_events", role) == {"SELECT", "INSERT"}
            assert public("rotation_events") == {"SELECT", "INSERT"}
            assert held("alembic_version", role) == public("alembic_version") == {"SELECT"}
            assert held("rotations", role) == set(_PRIVILEGES)      # not the audit trail
            # The columns 0009 added are the table's: what its grants say, nothing less.
            for table, column in (("rotations", "provider"), ("rotations", "vault_mount"),
                                  ("rotations", "vault_path"), ("rotations", "vault_field"),
                                  ("pending_cleanups", "provider")):
                assert all(conn.execute(text(
                    "SELECT has_column_privilege(:who, :table, :column, :privilege)"),
                    {"who": role, "table": table, "column": column, "privilege": p}).scalar()
                    for p in ("SELECT", "INSERT", "UPDATE")), (table, column)
            owner = conn.execute(text("SELECT current_user")).scalar_one()
            assert held("rotation_events", owner) == set(_PRIVILEGES)
            assert held("audit_key_lifetimes", role) <= {"SELECT"}
            assert held("audit_manual_rotations", role) == {"SELECT"}
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))
        engine.dispose()


def test_migrations_match_the_tables_module(migrated_url: str) -> None:
    engine = make_engine(migrated_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, tables.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_the_schema_the_code_requires_is_the_newest_migration() -> None:
    """A new migration moves SCHEMA_HEAD with it, or every daemon refuses its database."""
    assert head_revision() == schema.SCHEMA_HEAD


def test_a_daemon_loads_no_alembic() -> None:
    """Checking the schema reads alembic_version with plain SQL: Alembic and the scripts
    (some 10 MiB) load for `rotator db` only."""
    probe = ("import sys, rotator.cli.main, rotator.daemon.run; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_check_schema_refuses_an_empty_database(database_url: str) -> None:
    with pytest.raises(SchemaError, match=r"has no rotator schema: run `rotator db upgrade`"):
        _check(database_url)


def test_check_schema_passes_after_upgrade(migrated_url: str) -> None:
    _check(migrated_url)


def test_check_schema_refuses_an_unknown_revision(database_url: str) -> None:
    _stamp(database_url, "deadbeef")
    with pytest.raises(SchemaError, match=r"is at deadbeef, unknown to this rotator"):
        _check(database_url)
    with pytest.raises(SchemaError, match="cannot upgrade"):
        upgrade(database_url)


def test_check_schema_refuses_an_older_revision(
    migrated_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    newer = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), newer, ignore=shutil.ignore_patterns("__pycache__"))
    head = head_revision()
    (newer / "versions" / "9999_extra.py").write_text(SECOND_REVISION.format(head=head))
    monkeypatch.setattr(schema, "migrations_dir", lambda: newer)
    monkeypatch.setattr(schema, "SCHEMA_HEAD", "9999")   # a newer rotator's code
    assert head_revision() == "9999"
    with pytest.raises(
        SchemaError,
        match=rf"^database schema is at {head}, this rotator needs 9999: "
              r"run `rotator db upgrade`$",
    ):
        _check(migrated_url)
    assert upgrade(migrated_url) == "9999"
    _check(migrated_url)


def test_sqlite_engine_settings(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 5000
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_postgres_session_frozen_in_a_transaction_is_ended_by_the_server(
        database_url: str) -> None:
    # A replica frozen mid-transaction must not hold the lease row, and with it every
    # take-over, for as long as its connection lives.
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            setting = conn.execute(text("SHOW idle_in_transaction_session_timeout")).scalar()
        assert setting == PG_IDLE_IN_TRANSACTION
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_postgres_schema_holds_everything(migrated_url: str) -> None:
    engine = make_engine(migrated_url)
    try:
        with engine.connect() as conn:
            schema = conn.execute(text("SELECT current_schema()")).scalar_one()
            assert schema.startswith("t_")
            found = set(conn.execute(text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = :s"
            ), {"s": schema}).scalars())
            functions = set(conn.execute(text(
                "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                " WHERE n.nspname = :s"
            ), {"s": schema}).scalars())
    finally:
        engine.dispose()
    assert ROTATOR_TABLES | {"alembic_version"} <= found
    assert "rotation_events_append_only" in functions


def test_no_column_can_hold_key_material(migrated_url: str) -> None:
    engine = make_engine(migrated_url)
    try:
        inspector = inspect(engine)
        columns = {
            column["name"] for table in ROTATOR_TABLES for column in inspector.get_columns(table)
        }
    finally:
        engine.dispose()
    for word in ("secret", "token", "password", "api_key", "material", "value"):
        assert not [c for c in columns if word in c], word
    assert {"old_key_id", "new_key_id", "new_fingerprint", "key_id", "fingerprint"} <= columns


def test_0004_chains_the_rows_written_at_0003_and_new_rows_follow(database_url: str) -> None:
    engine = make_engine(database_url)
    at = datetime(2026, 11, 1, 12, 30, 5, 123456, tzinfo=UTC)
    insert = text(
        "INSERT INTO rotation_events (rotation_id, target, step, kind, action, result, key_id,"
        " detail, at, lease_generation) VALUES (:rid, :target, 'create', :kind, 'create_key',"
        " :result, 'key_1', :detail, :at, :gen)")
    try:
        _migrate(engine, command.upgrade, "0003")
        with engine.begin() as conn:
            # Two targets interleaved, a NULL generation (a row from before 0003), text
            # that JSON escapes, and a timestamp with microseconds.
            for i, target in enumerate(["app", "web", "app", "app", "web"]):
                conn.execute(insert, {
                    "rid": f"rot_{i}", "target": target,
                    "kind": "intent" if i % 2 == 0 else "outcome",
                    "result": None if i % 2 == 0 else "ok", "detail": f'"quoted" ü {i}',
                    "at": at + timedelta(seconds=i), "gen": None if i == 0 else i})
            # ...and one stamped by the database's own default.
            conn.execute(text(
                "INSERT INTO rotation_events (rotation_id, target, step, kind, action)"
                " VALUES ('rot_9', 'web', 'done', 'note', 'finished')"))
        _migrate(engine, command.upgrade, "0004")
        with engine.connect() as conn:
            chained = conn.execute(text(
                "SELECT target, chain_seq FROM rotation_events ORDER BY id")).all()
        assert [tuple(row) for row in chained] == [
            ("app", 1), ("web", 1), ("app", 2), ("app", 3), ("web", 2), ("web", 3)]
        # The later revisions leave the chain as it is; this code writes at the head.
        _migrate(engine, command.upgrade, "head")
        check_schema(engine)
        repo = SqlRepository(engine)
        report = repo.verify_chains()
        assert (report.targets, report.events, report.breaks) == (2, 6, [])

        # The writer continues each chain where the backfill left it.
        lease = repo.acquire_lease("app", "tests", 30, datetime.now(UTC))
        assert lease is not None
        repo.record(AuditEvent(rotation_id="rot_new", target="app", step="create",
                               kind=EventKind.NOTE, action="started"), lease)
        head = repo.chain_head("app")
        assert head is not None and head.chain_seq == 4
        assert repo.verify_chains().breaks == []

        # The append-only triggers are back, on both databases.
        with pytest.raises(DBAPIError, match="rotation_events is append-only"), \
                engine.begin() as conn:
            conn.execute(text("UPDATE rotation_events SET detail = 'x'"))

        _migrate(engine, command.downgrade, "0003")
        columns = {c["name"] for c in inspect(engine).get_columns("rotation_events")}
        assert {"chain_seq", "chain_hash"}.isdisjoint(columns)
        with pytest.raises(DBAPIError, match="rotation_events is append-only"), \
                engine.begin() as conn:
            conn.execute(text("DELETE FROM rotation_events"))
    finally:
        engine.dispose()
