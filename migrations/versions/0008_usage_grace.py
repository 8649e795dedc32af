"""Usage-aware grace: the policy a rotation started with.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

``rotations.quiet_period`` and ``rotations.max_grace`` (seconds) hold the usage-aware
grace a rotation follows, taken from the config when it starts, as ``grace_seconds`` is:
a restart, another replica or a changed config finishes it under the policy it began
with, and a ``rotate --grace`` (an operator's exact window, a leaked key's revoke at
once) stores none. NULL on every older row: the plain grace window, as before.
Hand-written, like 0001, so it keeps describing the same change whatever the code becomes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE, not a batch copy: a copy would drop rotations' trigger.
    op.add_column("rotations", sa.Column("quiet_period", sa.Float()))
    op.add_column("rotations", sa.Column("max_grace", sa.Float()))


def downgrade() -> None:
    # SQLite (3.35+) drops a plain column in place, so the trigger stays.
    op.drop_column("rotations", "max_grace")
    op.drop_column("rotations", "quiet_period")
