"""A rotation's failure as fields: the step whose action failed, a code and the message.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

``reason`` keeps the same words it always had (composed from these fields by
``rotator.core.model.reason_text``); the fields let every reader, another replica or a
restarted process included, know the failed step and why a rollback is blocked without
parsing that text. Nullable: rows written before this revision have the text only.
Hand-written, like 0001, so it keeps describing the same change whatever the code becomes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rotations") as batch:
        batch.add_column(sa.Column("failure_step", sa.String(32)))
        batch.add_column(sa.Column("failure_code", sa.String(64)))
        batch.add_column(sa.Column("failure_message", sa.Text))
        batch.add_column(sa.Column("rollback_blocked", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("rotations") as batch:
        for name in ("rollback_blocked", "failure_message", "failure_code", "failure_step"):
            batch.drop_column(name)
