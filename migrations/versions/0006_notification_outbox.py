"""The notification outbox: one row per notice and sink, kept until it is delivered.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

A notice is written in the transaction of the state change that causes it (a rotation's
bad ending, a blocked rollback, a deleted key found alive), so a crash between the two
loses neither; the daemon's dispatcher delivers the rows at least once, each attempt
recorded (``attempts``, ``last_error``, ``next_attempt_at``, ``delivered_at``), and a
replica sending a row claims it first (``claimed_by``, ``claimed_until``).
``(sink, dedupe_key)`` is unique: a condition seen on every sweep is enqueued once.
The runtime role's default privileges (deploy/postgres/roles.sql: SELECT, INSERT,
UPDATE) are what the daemon needs. Hand-written, like 0001: it imports nothing of
rotator's, so it keeps describing the same change whatever the code becomes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notification_outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("delivery_id", sa.String(64), nullable=False, unique=True),
        sa.Column("sink", sa.String(200), nullable=False),
        sa.Column("dedupe_key", sa.String(400), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("rotation_id", sa.String(200)),
        sa.Column("notice", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(200)),
        sa.Column("claimed_until", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.Text()),
        sa.Column("delivered_at", sa.DateTime(timezone=True)),
    )
    op.create_index("uq_notification_outbox_dedupe", "notification_outbox",
                    ["sink", "dedupe_key"], unique=True)
    op.create_index("ix_notification_outbox_due", "notification_outbox",
                    ["delivered_at", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_notification_outbox_due", "notification_outbox")
    op.drop_index("uq_notification_outbox_dedupe", "notification_outbox")
    op.drop_table("notification_outbox")
