"""``audit_key_lifetimes`` (and so ``audit_current_keys``) read one target's rows only.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03

0005's view names its ``ordered`` CTE twice, so PostgreSQL materialized it: every completed
rotation of every target, each with its live-from lookup in ``rotation_events``, before an
auditor's ``WHERE target = ...`` applied (about 2 s at 100,000 rotations for one target;
docs/benchmarks.md). Declared ``NOT MATERIALIZED``, the CTE is inlined in both places and
the filter reaches ``rotations`` through the window's partition (``target``), so one
target's question reads that target's rows by their indexes. The view's columns, their
order and its meaning are unchanged, so ``CREATE OR REPLACE VIEW`` redefines it in place:
its owner, the SELECT-only grants 0005 left and ``audit_current_keys`` (built on it) stay.

SQLite inlines a CTE used in a subquery by its own rules and has no ``OR REPLACE`` for
views; 0005's view is kept there as it is. Hand-written, like 0005 and 0007, so it keeps
describing the same change whatever the code becomes.
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# 0005's definition, word for word but for ``{ordered}``.
_KEY_LIFETIMES = """
CREATE OR REPLACE VIEW audit_key_lifetimes AS
WITH installed AS (
    SELECT r.target, r.new_key_id AS key_id, r.old_key_id, r.rotation_id,
           (SELECT MAX(e.at) FROM rotation_events e WHERE e.rotation_id = r.rotation_id
            AND e.kind = 'outcome' AND e.action = 'vault_write' AND e.result = 'ok')
           AS live_from
    FROM rotations r WHERE r.status = 'completed'
), ordered AS {ordered}(
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


def _define(ordered: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_KEY_LIFETIMES.format(ordered=ordered))


def upgrade() -> None:
    _define("NOT MATERIALIZED ")


def downgrade() -> None:
    _define("")
