"""Lease fencing: a generation per lease, carried by every row written under it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

``leases.generation`` grows by one on every acquisition; the rotation row and every audit
row a holder writes carry the generation it holds (``lease_generation``), and the writes
are conditioned on it, so a holder that lost its lease (frozen, partitioned) changes
nothing once another took over. A lease row is kept when released (its expiry is set to
the epoch) so that the next generation follows the last. A trigger keeps a finished
rotation (completed, rolled back, failed) from changing again: it has one ending.
Rows written before this revision have no generation (NULL).
Hand-written, like 0001, so it keeps describing the same change whatever the code becomes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_MESSAGE = "a finished rotation never changes"


def upgrade() -> None:
    op.add_column("leases", sa.Column("generation", sa.Integer(), nullable=False,
                                      server_default=sa.text("0")))
    op.add_column("rotations", sa.Column("lease_generation", sa.Integer()))
    op.add_column("rotation_events", sa.Column("lease_generation", sa.Integer()))
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute(
            "CREATE TRIGGER rotations_finished_final BEFORE UPDATE ON rotations "
            "WHEN OLD.status <> 'running' "
            f"BEGIN SELECT RAISE(ABORT, '{_MESSAGE}'); END"
        )
    elif dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION rotations_finished_final() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            "IF OLD.status <> 'running' THEN "
            f"RAISE EXCEPTION '{_MESSAGE}' USING ERRCODE = 'restrict_violation'; "
            "END IF; RETURN NEW; END $$"
        )
        op.execute(
            "CREATE TRIGGER rotations_finished_final BEFORE UPDATE ON rotations "
            "FOR EACH ROW EXECUTE FUNCTION rotations_finished_final()"
        )
    else:
        raise NotImplementedError(f"rotator supports SQLite and PostgreSQL, not {dialect}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS rotations_finished_final ON rotations")
        op.execute("DROP FUNCTION IF EXISTS rotations_finished_final()")
    else:
        op.execute("DROP TRIGGER IF EXISTS rotations_finished_final")
    # Plain ALTER TABLE (SQLite 3.35+), not a batch copy: a copy would drop the
    # append-only triggers of rotation_events.
    op.drop_column("rotation_events", "lease_generation")
    op.drop_column("rotations", "lease_generation")
    op.drop_column("leases", "generation")
