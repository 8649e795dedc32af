"""Initial schema: rotations, the append-only audit trail, leases, pending cleanups.

Revision ID: 0001
Revises:
Create Date: 2024-06-01

Hand-written on purpose: it does not import ``rotator.adapters.sql.tables``, so this
revision keeps describing the same schema whatever the code becomes. The append-only rule
of ``rotation_events`` is enforced by triggers, so that no code path (nor a hurried
operator with a SQL shell) can rewrite the audit trail.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = 200
_NOW = sa.text("CURRENT_TIMESTAMP")
_RUNNING = sa.text("status = 'running'")
_UNRESOLVED = sa.text("resolved_at IS NULL")
_MESSAGE = "rotation_events is append-only"


def _ts(name: str, *, nullable: bool = True, server_default=None) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable,
                     server_default=server_default)


def upgrade() -> None:
    op.create_table(
        "rotations",
        sa.Column("rotation_id", sa.String(_ID), primary_key=True),
        sa.Column("target", sa.String(_ID), nullable=False),
        sa.Column("service_account", sa.String(_ID), nullable=False),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(_ID), nullable=False),
        sa.Column("grace_seconds", sa.Float(), nullable=False),
        _ts("started_at", nullable=False),
        sa.Column("step", sa.String(32), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("old_key_id", sa.String(_ID)),
        sa.Column("old_version", sa.Integer()),
        sa.Column("new_key_id", sa.String(_ID)),
        sa.Column("new_fingerprint", sa.String(128)),
        sa.Column("new_version", sa.Integer()),
        _ts("grace_ends_at"),
        _ts("finished_at"),
        sa.Column("reason", sa.Text()),
        sa.Column("recreate_count", sa.Integer(), nullable=False, server_default=sa.text("0")),
        _ts("updated_at", nullable=False, server_default=_NOW),
        sa.CheckConstraint(
            "status IN ('running', 'completed', 'rolled_back', 'failed')",
            name="ck_rotations_status",
        ),
    )
    op.create_index(
        "uq_rotations_running_target", "rotations", ["target"], unique=True,
        sqlite_where=_RUNNING, postgresql_where=_RUNNING,
    )
    op.create_index("ix_rotations_target_started", "rotations", ["target", "started_at"])
    op.create_index(
        "ix_rotations_service_account_status", "rotations", ["service_account", "status"]
    )

    op.create_table(
        "rotation_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("rotation_id", sa.String(_ID), nullable=False),
        sa.Column("target", sa.String(_ID), nullable=False),
        sa.Column("step", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("action", sa.String(_ID), nullable=False),
        sa.Column("result", sa.String(64)),
        sa.Column("key_id", sa.String(_ID)),
        sa.Column("fingerprint", sa.String(128)),
        sa.Column("vault_version", sa.Integer()),
        sa.Column("request_id", sa.String(_ID)),
        sa.Column("op_id", sa.String(_ID)),
        sa.Column("detail", sa.Text()),
        _ts("at", nullable=False, server_default=_NOW),
        sa.CheckConstraint(
            "kind IN ('intent', 'outcome', 'note')", name="ck_rotation_events_kind"
        ),
    )
    op.create_index(
        "ix_rotation_events_rotation_op", "rotation_events", ["rotation_id", "op_id"]
    )
    op.create_index("ix_rotation_events_target_at", "rotation_events", ["target", "at"])

    op.create_table(
        "leases",
        sa.Column("target", sa.String(_ID), primary_key=True),
        sa.Column("holder", sa.String(_ID), nullable=False),
        _ts("acquired_at", nullable=False),
        _ts("expires_at", nullable=False),
    )

    op.create_table(
        "pending_cleanups",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("target", sa.String(_ID), nullable=False),
        sa.Column("service_account", sa.String(_ID), nullable=False),
        sa.Column("key_id", sa.String(_ID), nullable=False),
        sa.Column("rotation_id", sa.String(_ID), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        _ts("created_at", nullable=False),
        _ts("resolved_at"),
    )
    op.create_index(
        "uq_pending_cleanups_open", "pending_cleanups", ["target", "key_id"], unique=True,
        sqlite_where=_UNRESOLVED, postgresql_where=_UNRESOLVED,
    )

    _create_append_only_triggers()


def _create_append_only_triggers() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER rotation_events_no_{event.lower()} "
                f"BEFORE {event} ON rotation_events "
                f"BEGIN SELECT RAISE(ABORT, '{_MESSAGE}'); END"
            )
    elif dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION rotation_events_append_only() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            f"RAISE EXCEPTION '{_MESSAGE}' USING ERRCODE = 'restrict_violation'; "
            "END $$"
        )
        op.execute(
            "CREATE TRIGGER rotation_events_no_update_delete "
            "BEFORE UPDATE OR DELETE ON rotation_events "
            "FOR EACH ROW EXECUTE FUNCTION rotation_events_append_only()"
        )
        op.execute(
            "CREATE TRIGGER rotation_events_no_truncate "
            "BEFORE TRUNCATE ON rotation_events "
            "FOR EACH STATEMENT EXECUTE FUNCTION rotation_events_append_only()"
        )
    else:
        raise NotImplementedError(f"rotator supports SQLite and PostgreSQL, not {dialect}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS rotation_events_no_truncate ON rotation_events")
        op.execute("DROP TRIGGER IF EXISTS rotation_events_no_update_delete ON rotation_events")
        op.execute("DROP FUNCTION IF EXISTS rotation_events_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS rotation_events_no_delete")
        op.execute("DROP TRIGGER IF EXISTS rotation_events_no_update")
    op.drop_index("uq_pending_cleanups_open", table_name="pending_cleanups")
    op.drop_table("pending_cleanups")
    op.drop_table("leases")
    op.drop_index("ix_rotation_events_target_at", table_name="rotation_events")
    op.drop_index("ix_rotation_events_rotation_op", table_name="rotation_events")
    op.drop_table("rotation_events")
    op.drop_index("ix_rotations_service_account_status", table_name="rotations")
    op.drop_index("ix_rotations_target_started", table_name="rotations")
    op.drop_index("uq_rotations_running_target", table_name="rotations")
    op.drop_table("rotations")
