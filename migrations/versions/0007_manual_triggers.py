"""``audit_manual_rotations`` lists both kinds of manual rotation.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

From this revision ``rotator run --rotate`` (and ``--rotate-all``) records the trigger
``run_rotate`` and ``rotator rotate`` keeps ``manual`` (``rotator.core.vocabulary.Trigger``).
Both are an operator's request, so the view lists both. Rows written before keep their
meaning: their ``manual`` was either command, and they are listed as before.

The view keeps its columns, in their order (``rotations.trigger`` tells the two apart), so
on PostgreSQL ``CREATE OR REPLACE VIEW`` redefines it in place: its owner and the grants
revision 0005 left (SELECT only, for every role but the owner) stay as they are. SQLite has
no ``OR REPLACE`` for views, and no grants to keep: the view is dropped and created again.
Hand-written, like 0005, so it keeps describing the same change whatever the code becomes.
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_MANUAL = """
{create} audit_manual_rotations AS
SELECT rotation_id, target, actor, manual_reason AS reason, status, started_at,
       finished_at, old_key_id, new_key_id
FROM rotations WHERE trigger IN ({triggers})
"""


def _define(*triggers: str) -> None:
    listed = ", ".join(f"'{t}'" for t in triggers)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_MANUAL.format(create="CREATE OR REPLACE VIEW", triggers=listed))
        return
    op.execute("DROP VIEW IF EXISTS audit_manual_rotations")
    op.execute(_MANUAL.format(create="CREATE VIEW", triggers=listed))


def upgrade() -> None:
    _define("manual", "run_rotate")


def downgrade() -> None:
    # 0005's view: a `run --rotate` rotation written since then is no longer listed.
    _define("manual")
