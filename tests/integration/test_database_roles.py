"""``deploy/postgres/roles.sql``, applied with psql as shipped: the owner migrates, the
runtime role rotates (CLI and daemon) but cannot rewrite or unprotect the audit trail.

Each test creates its own roles and schema on the local PostgreSQL (names unique per run)
and drops them after.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from rotator.adapters.sql.schema import SCHEMA_HEAD, make_engine, upgrade
from rotator.core.model import Status
from rotator.emulator import Emulator
from tests.fixtures.databases import pg_admin_url
from tests.fixtures.openbao import OpenBao
from tests.integration.daemon_process import Daemon, daemon_config
from tests.integration.world import build_world

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

ROLES_SQL = Path(__file__).resolve().parents[2] / "deploy" / "postgres" / "roles.sql"
INSUFFICIENT_PRIVILEGE = "42501"     # also "must be owner of table"


@dataclass(frozen=True)
class Roles:
    owner: str
    runtime: str
    auditor: str
    schema: str

    def url(self, role: str | None) -> str:
        """The URL ``role`` logs in with (``None``: libpq's PGUSER, as deploy/ does it); no
        search_path, roles.sql gives each role one."""
        # URL is a named tuple: _replace clears a field, where set() leaves None alone.
        return make_url(pg_admin_url())._replace(username=role, password=None).render_as_string(
            hide_password=False)


def _psql_conninfo() -> str:
    return make_url(pg_admin_url()).set(drivername="postgresql").render_as_string(
        hide_password=False)


@pytest.fixture
def roles(request: pytest.FixtureRequest) -> Iterator[Roles]:
    request.getfixturevalue("_postgres_reachable")
    run = uuid.uuid4().hex[:12]
    made = Roles(f"rotator_owner_{run}", f"rotator_{run}", f"rotator_auditor_{run}",
                 f"rotator_{run}")
    applied = subprocess.run(
        ["psql", _psql_conninfo(), "-X", "-q", "-v", "ON_ERROR_STOP=1",
         "-v", f"owner={made.owner}", "-v", f"runtime={made.runtime}",
         "-v", f"auditor={made.auditor}", "-v", f"schema={made.schema}", "-f", str(ROLES_SQL)],
        capture_output=True, text=True, timeout=60, check=False)
    try:
        assert applied.returncode == 0, applied.stderr
        yield made
    finally:
        admin = create_engine(pg_admin_url(), poolclass=NullPool)
        names = ", ".join(f'"{r}"' for r in (made.owner, made.runtime, made.auditor))
        try:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{made.schema}" CASCADE'))
                found = conn.execute(text("SELECT count(*) FROM pg_roles WHERE rolname IN"
                                          " (:a, :b, :c)"),
                                     {"a": made.owner, "b": made.runtime,
                                      "c": made.auditor}).scalar_one()
                if found == 3:
                    conn.execute(text(f"DROP OWNED BY {names}"))
                conn.execute(text(f"DROP ROLE IF EXISTS {names}"))
        finally:
            admin.dispose()


def _refused(url: str, statement: str) -> str:
    """The SQLSTATE ``statement`` fails with, run by the role of ``url``."""
    engine = make_engine(url)
    try:
        with pytest.raises(DBAPIError) as caught, engine.begin() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()
    return str(getattr(caught.value.orig, "sqlstate", ""))


def test_the_runtime_role_rotates_but_cannot_rewrite_the_audit_trail(
        roles: Roles, emulator: Emulator, openbao: OpenBao, vault_mount: str,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert upgrade(roles.url(roles.owner)) == SCHEMA_HEAD
    # As deploy/kubernetes and deploy/compose do it: one URL, the user from PGUSER.
    monkeypatch.setenv("PGUSER", roles.runtime)
    runtime = roles.url(None)
    world = build_world(emulator, openbao.url, openbao.root_token, vault_mount, runtime,
                        tmp_path, ("manual", "scheduled"))

    # The CLI and the daemon, as the runtime role, against the emulator and OpenBao.
    rotated = world.cli("rotate", "manual", "--reason", "SEC-42: key pasted in a CI log")
    assert rotated.returncode == 0, rotated.stderr
    config, port = daemon_config(world, "d1")   # "scheduled" has no history: due now
    daemon = Daemon(world, config, port, "--once")
    try:
        assert daemon.wait(60) == 0, daemon.logs()[-3000:]
    finally:
        daemon.close()
    for name in ("manual", "scheduled"):
        assert [r.status for r in world.rotations(name)] == [Status.COMPLETED]
        world.assert_invariants(name)
        # It writes the columns of 0009 (the provider and Vault ref a rotation began with).
        [rot] = world.rotations(name)
        assert rot.provider == "count" and rot.vault_ref is not None
        assert rot.vault_ref.path == f"count/{name}"
    assert world.cli("verify").returncode == 0

    # It reads and appends the audit trail...
    engine = make_engine(runtime)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM rotation_events")).scalar_one() > 10
            conn.execute(text(
                "INSERT INTO rotation_events (rotation_id, target, step, kind, action)"
                " VALUES ('rot_x', 'manual', 'plan', 'note', 'started')"))
            conn.rollback()
            assert conn.execute(text("SELECT current_user")).scalar_one() == roles.runtime
    finally:
        engine.dispose()
    # ...and can change nothing of it, nor take its protection away.
    for statement in (
        "UPDATE rotation_events SET detail = 'forged'",
        "DELETE FROM rotation_events",
        "TRUNCATE rotation_events",
        "ALTER TABLE rotation_events DISABLE TRIGGER USER",
        "ALTER TABLE rotation_events ADD COLUMN forged text",
        "DROP TRIGGER rotation_events_no_update_delete ON rotation_events",
        "UPDATE alembic_version SET version_num = '0001'",
        "CREATE TABLE rotation_events_copy (id int)",
        "DROP VIEW audit_manual_rotations",
        "UPDATE audit_manual_rotations SET reason = 'forged'",   # an updatable view
        "DELETE FROM rotations",
    ):
        assert _refused(runtime, statement) == INSUFFICIENT_PRIVILEGE, statement

    # The auditor reads the views and the tables, and writes nothing.
    auditor = roles.url(roles.auditor)
    engine = make_engine(auditor)
    try:
        with engine.connect() as conn:
            manual = conn.execute(text(
                "SELECT target, actor, reason FROM audit_manual_rotations")).all()
            current = conn.execute(text(
                "SELECT target FROM audit_current_keys ORDER BY target")).scalars().all()
    finally:
        engine.dispose()
    assert [(m.target, m.reason) for m in manual] == [
        ("manual", "SEC-42: key pasted in a CI log")]
    assert current == ["manual", "scheduled"]
    assert _refused(auditor, "INSERT INTO rotation_events (rotation_id, target, step, kind,"
                             " action) VALUES ('r', 't', 'plan', 'note', 'x')") == \
        INSUFFICIENT_PRIVILEGE
