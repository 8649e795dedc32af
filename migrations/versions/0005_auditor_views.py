"""Auditor views, the reason of a manual rotation, and an audit table only its owner changes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

Four views answer an auditor's questions in plain SQL (docs/audit.md has the queries):

    audit_key_lifetimes     which key was live for a target, from when to when
    audit_current_keys      each target's live key and its age (against a max age policy)
    audit_failed_rotations  the rotations that failed or rolled back, and why
    audit_manual_rotations  the manual rotations: who ran them, when, and why

``rotations.manual_reason`` holds what ``rotator rotate --reason`` was given (NULL for a
scheduled rotation or none given). On PostgreSQL every role but the owner is left with
SELECT and INSERT on ``rotation_events`` and SELECT on the views and ``alembic_version``,
whatever the default privileges granted (deploy/postgres/roles.sql): the runtime role then
cannot rewrite, truncate or unprotect the audit trail, and only the owner can alter it.
Hand-written, like 0001, so it keeps describing the same change whatever the code becomes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# When a completed rotation's key went live: its last successful Vault write.
_LIVE_FROM = (
    "(SELECT MAX(e.at) FROM rotation_events e WHERE e.rotation_id = r.rotation_id"
    " AND e.kind = 'outcome' AND e.action = 'vault_write' AND e.result = 'ok')"
)

# One row per key a completed rotation installed, and one per key a target's first
# completed rotation found in place (installed_by and live_from NULL: before rotator).
_KEY_LIFETIMES = f"""
CREATE VIEW audit_key_lifetimes AS
WITH installed AS (
    SELECT r.target, r.new_key_id AS key_id, r.old_key_id, r.rotation_id,
           {_LIVE_FROM} AS live_from
    FROM rotations r WHERE r.status = 'completed'
), ordered AS (
    SELECT i.*, LEAD(i.live_from) OVER w AS live_until,
           LEAD(i.rotation_id) OVER w AS replaced_by, ROW_NUMBER() OVER w AS nth
    FROM installed i
    WINDOW w AS (PARTITION BY i.target ORDER BY i.live_from, i.rotation_id)
), keys AS (
    SELECT target, key_id, rotation_id AS installed_by, live_from, live_until, replaced_by
    FROM ordered
    UNION ALL
    SELECT target, old_key_id, NULL, NULL, live_from, rotation_id
    FROM ordered WHERE nth = 1 AND old_key_id IS NOT NULL
)
SELECT k.target, k.key_id, k.installed_by, k.live_from, k.live_until, k.replaced_by,
       (SELECT MIN(d.at) FROM rotation_events d
        WHERE d.target = k.target AND d.key_id = k.key_id AND d.kind = 'outcome'
          AND d.action IN ('revoke_key', 'cleanup_key')
          AND d.result IN ('ok', 'already_gone')) AS revoked_at
FROM keys k
"""

_AGE_SECONDS = {
    "sqlite": "(julianday('now') - julianday(live_from)) * 86400.0",
    "postgresql": "EXTRACT(EPOCH FROM (CURRENT_TIMESTAMP - live_from))",
}

_CURRENT_KEYS = """
CREATE VIEW audit_current_keys AS
SELECT target, key_id, installed_by, live_from, {age} AS age_seconds
FROM audit_key_lifetimes WHERE live_until IS NULL AND live_from IS NOT NULL
"""

_FAILED = """
CREATE VIEW audit_failed_rotations AS
SELECT rotation_id, target, status, trigger, actor, started_at, finished_at,
       failure_step, failure_code, failure_message, rollback_blocked, reason,
       new_key_id, old_key_id
FROM rotations WHERE status IN ('failed', 'rolled_back')
"""

_MANUAL = """
CREATE VIEW audit_manual_rotations AS
SELECT rotation_id, target, actor, manual_reason AS reason, status, started_at,
       finished_at, old_key_id, new_key_id
FROM rotations WHERE trigger = 'manual'
"""

VIEWS = ("audit_manual_rotations", "audit_failed_rotations", "audit_current_keys",
         "audit_key_lifetimes")

# Revoke from every grantee but the owner each privilege on ``table`` outside ``keep``
# (grantee 0 is PUBLIC). Run by the migrating role, the owner, which granted them.
_ONLY = """
DO $$
DECLARE held record;
BEGIN
    FOR held IN
        SELECT DISTINCT a.grantee, a.privilege_type FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.oid = '{table}'::regclass AND a.grantee <> c.relowner
          AND a.privilege_type NOT IN ({keep})
    LOOP
        EXECUTE format('REVOKE %s ON {table} FROM %s', held.privilege_type,
            CASE WHEN held.grantee = 0 THEN 'PUBLIC'
                 ELSE quote_ident(pg_get_userbyid(held.grantee)) END);
    END LOOP;
END $$
"""


def _only(table: str, *privileges: str) -> None:
    """No one but the owner holds a privilege on ``table`` outside ``privileges``."""
    keep = ", ".join(f"'{p}'" for p in privileges)
    op.execute(_ONLY.format(table=table, keep=keep))


def upgrade() -> None:
    # Plain ALTER TABLE, not a batch copy: a copy would drop rotations' trigger.
    op.add_column("rotations", sa.Column("manual_reason", sa.Text()))
    dialect = op.get_bind().dialect.name
    if dialect not in _AGE_SECONDS:
        raise NotImplementedError(f"rotator supports SQLite and PostgreSQL, not {dialect}")
    for view in (_KEY_LIFETIMES, _CURRENT_KEYS.format(age=_AGE_SECONDS[dialect]), _FAILED,
                 _MANUAL):
        op.execute(view)
    if dialect == "postgresql":
        _only("rotation_events", "SELECT", "INSERT")
        _only("alembic_version", "SELECT")      # only `rotator db upgrade` moves it
        for view in VIEWS:
            _only(view, "SELECT")


def downgrade() -> None:
    for view in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {view}")
    op.drop_column("rotations", "manual_reason")
