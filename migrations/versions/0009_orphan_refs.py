"""What a rotation and a queued deletion need to be finished without their target's config.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03

``rotations.provider`` and ``rotations.vault_mount``, ``vault_path``, ``vault_field``: the
provider and the Vault ref a rotation started with; ``pending_cleanups.provider``: the
provider whose management key deletes the queued key. With them the daemon finishes the
work of a target no longer in the config exactly as it began (``rotator.app.orphans``),
and never resumes a rotation against another path or provider. NULL on every older row:
such work stays report-only, as before. The runtime role's table privileges
(deploy/postgres/roles.sql: SELECT, INSERT, UPDATE) cover the new columns.
Hand-written, like 0001, so it keeps describing the same change whatever the code becomes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE, not a batch copy: a copy would drop rotations' trigger.
    op.add_column("rotations", sa.Column("provider", sa.String(200)))
    op.add_column("rotations", sa.Column("vault_mount", sa.String(200)))
    op.add_column("rotations", sa.Column("vault_path", sa.Text()))
    op.add_column("rotations", sa.Column("vault_field", sa.String(200)))
    op.add_column("pending_cleanups", sa.Column("provider", sa.String(200)))


def downgrade() -> None:
    # SQLite (3.35+) drops a plain column in place, so the trigger stays.
    op.drop_column("pending_cleanups", "provider")
    op.drop_column("rotations", "vault_field")
    op.drop_column("rotations", "vault_path")
    op.drop_column("rotations", "vault_mount")
    op.drop_column("rotations", "provider")
