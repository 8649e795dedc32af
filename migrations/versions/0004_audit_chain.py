"""The audit chain: every event hashed together with the one before it of its target.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

``rotation_events`` gains ``chain_seq`` (1, 2, 3... per target, unique with the target) and
``chain_hash``. The rows already there are chained here, per target in id order, with the
unkeyed ``sha256`` scheme (a migration reads no config, so no key): an HMAC key configured
later keys the events written from then on.

The hash is ``rotator.core.audit_chain.chain_hash`` with its v1 encoding, which that module
documents as frozen (never changed, only added to), so this revision keeps computing the
same hashes whatever the rest of the code becomes; the rows are read here with plain
columns, not through ``rotator.adapters.sql.tables``. The append-only triggers are set
aside for the backfill's UPDATEs, inside this revision's transaction, and put back as they
were.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

from rotator.core.audit_chain import CONTENT_COLUMNS, chain_hash

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_MESSAGE = "rotation_events is append-only"
_INDEX = "uq_rotation_events_chain"

_events = sa.table(
    "rotation_events",
    sa.column("id", sa.Integer()),
    *(sa.column(name, sa.DateTime(timezone=True) if name == "at" else sa.String())
      for name in CONTENT_COLUMNS if name not in ("vault_version", "lease_generation")),
    sa.column("vault_version", sa.Integer()),
    sa.column("lease_generation", sa.Integer()),
    sa.column("chain_seq", sa.Integer()),
    sa.column("chain_hash", sa.String()),
)


def upgrade() -> None:
    op.add_column("rotation_events", sa.Column("chain_seq", sa.Integer()))
    op.add_column("rotation_events", sa.Column("chain_hash", sa.String(128)))
    _without_update_trigger(_backfill)
    op.create_index(_INDEX, "rotation_events", ["target", "chain_seq"], unique=True)


def _utc(at: datetime) -> datetime:
    # SQLite gives back the naive UTC text rotator stored; PostgreSQL an aware timestamp.
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _backfill() -> None:
    bind = op.get_bind()
    query = sa.select(_events).order_by(_events.c.target, _events.c.id)
    target: str | None = None
    seq, previous = 0, ""
    links: list[dict[str, Any]] = []   # (id, seq, hash) per row: the rows are not kept
    for row in bind.execute(query).mappings():
        if row["target"] != target:
            target, seq, previous = row["target"], 0, ""
        seq += 1
        previous = chain_hash({**row, "at": _utc(row["at"])}, seq, previous)
        links.append({"row_id": row["id"], "seq": seq, "hash": previous})
    if links:
        bind.execute(
            _events.update().where(_events.c.id == sa.bindparam("row_id"))
            .values(chain_seq=sa.bindparam("seq"), chain_hash=sa.bindparam("hash")), links)


def _without_update_trigger(work: Any) -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("ALTER TABLE rotation_events DISABLE TRIGGER rotation_events_no_update_delete")
        work()
        op.execute("ALTER TABLE rotation_events ENABLE TRIGGER rotation_events_no_update_delete")
    elif dialect == "sqlite":
        op.execute("DROP TRIGGER rotation_events_no_update")
        work()
        # As revision 0001 created it.
        op.execute("CREATE TRIGGER rotation_events_no_update BEFORE UPDATE ON rotation_events "
                   f"BEGIN SELECT RAISE(ABORT, '{_MESSAGE}'); END")
    else:
        raise NotImplementedError(f"rotator supports SQLite and PostgreSQL, not {dialect}")


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="rotation_events")
    # Plain ALTER TABLE (SQLite 3.35+), not a batch copy: a copy would drop the
    # append-only triggers of rotation_events.
    op.drop_column("rotation_events", "chain_hash")
    op.drop_column("rotation_events", "chain_seq")
