"""The SQLAlchemy Core tables of rotator, mirroring ``migrations/versions``.

    rotations          one row per rotation: every field of ``Rotation`` (its provider and
                       Vault ref since revision 0009) plus ``updated_at`` and the lease
                       generation of its last write; a trigger rejects any UPDATE of a
                       finished rotation
    rotation_events    the append-only audit trail (database triggers reject UPDATE/DELETE),
                       each row stamped with its writer's lease generation and chained
                       to the target's event before it by a hash (``chain_hash``)
    leases             who is rotating a target, until when, and the lease's generation
    pending_cleanups   keys to delete on the next pass (a revoke that could not finish),
                       with the provider that deletes them (revision 0009)
    notification_outbox  one row per notice and sink, until delivered (revision 0006,
                       docs/notifications.md); the body is built from ``notice``, which
                       holds ids and reasons, never key material
    audit_* (views)    the auditor's questions (revision 0005, docs/audit.md); not mirrored
                       here: nothing of rotator's reads them

No column holds key material: key ids and short fingerprints only. Every timestamp is
``UtcDateTime``: timezone-aware UTC in and out, also on SQLite, which stores it naive.
The migrations are hand-written; ``tests/test_migrations.py`` proves that they and these
tables describe the same schema.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.types import TypeDecorator

from rotator.adapters.sql.backend import is_sqlite

__all__ = [
    "APPEND_ONLY_MESSAGE",
    "FINISHED_MESSAGE",
    "UtcDateTime",
    "leases",
    "metadata",
    "notification_outbox",
    "pending_cleanups",
    "rotation_events",
    "rotations",
]

# The text of the error the database raises on UPDATE or DELETE of an audit row.
APPEND_ONLY_MESSAGE = "rotation_events is append-only"
# ... and on an UPDATE of a rotation that has ended.
FINISHED_MESSAGE = "a finished rotation never changes"

# Identifiers: rotation ids, targets, key ids; generous but bounded.
_ID = 200
# A chain hash: its scheme ("hmac-sha256:") and 64 hex digits.
_HASH = 128


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that is timezone-aware UTC in Python, whatever the database keeps.

    Naive datetimes are refused on the way in (their zone is a guess); values are stored
    as UTC (SQLite keeps them as naive ISO text, so string comparison orders them) and
    come back with ``tzinfo=UTC``.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()}: rotator stores UTC only")
        value = value.astimezone(UTC)
        if is_sqlite(dialect):
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = MetaData()

rotations = Table(
    "rotations",
    metadata,
    Column("rotation_id", String(_ID), primary_key=True),
    Column("target", String(_ID), nullable=False),
    Column("service_account", String(_ID), nullable=False),
    Column("trigger", String(32), nullable=False),
    Column("actor", String(_ID), nullable=False),
    Column("grace_seconds", Float, nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("step", String(32), nullable=False),
    Column("status", String(32), nullable=False),
    Column("old_key_id", String(_ID)),
    Column("old_version", Integer),
    Column("new_key_id", String(_ID)),
    Column("new_fingerprint", String(128)),
    Column("new_version", Integer),
    Column("grace_ends_at", UtcDateTime),
    Column("finished_at", UtcDateTime),
    Column("reason", Text),
    Column("recreate_count", Integer, nullable=False, server_default=text("0")),
    # The failure behind ``reason``, as fields (revision 0002); NULL on older rows.
    Column("failure_step", String(32)),
    Column("failure_code", String(64)),
    Column("failure_message", Text),
    Column("rollback_blocked", Text),
    Column("updated_at", UtcDateTime, nullable=False, server_default=text("CURRENT_TIMESTAMP")),
    # The lease generation of the last write (revision 0003); NULL on older rows.
    Column("lease_generation", Integer),
    # What `rotator rotate --reason` was given (revision 0005); NULL if nothing was.
    Column("manual_reason", Text),
    # The usage-aware grace the rotation follows, in seconds (revision 0008); NULL: none.
    Column("quiet_period", Float),
    Column("max_grace", Float),
    # The provider and Vault ref the rotation started with (revision 0009); NULL on older
    # rows. What finishes it if its target leaves the config (``app.orphans``).
    Column("provider", String(_ID)),
    Column("vault_mount", String(_ID)),
    Column("vault_path", Text),
    Column("vault_field", String(_ID)),
    CheckConstraint(
        "status IN ('running', 'completed', 'rolled_back', 'failed')",
        name="ck_rotations_status",
    ),
)

# At most one running rotation per target, enforced by the database itself.
Index(
    "uq_rotations_running_target",
    rotations.c.target,
    unique=True,
    sqlite_where=text("status = 'running'"),
    postgresql_where=text("status = 'running'"),
)
Index("ix_rotations_target_started", rotations.c.target, rotations.c.started_at)
Index("ix_rotations_service_account_status", rotations.c.service_account, rotations.c.status)

rotation_events = Table(
    "rotation_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rotation_id", String(_ID), nullable=False),
    Column("target", String(_ID), nullable=False),
    Column("step", String(32), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("action", String(_ID), nullable=False),
    Column("result", String(64)),
    Column("key_id", String(_ID)),
    Column("fingerprint", String(128)),
    Column("vault_version", Integer),
    Column("request_id", String(_ID)),
    Column("op_id", String(_ID)),
    Column("detail", Text),
    Column("at", UtcDateTime, nullable=False, server_default=text("CURRENT_TIMESTAMP")),
    # The generation of the lease its writer held (revision 0003); NULL on older rows.
    Column("lease_generation", Integer),
    # The hash chain of the target's events (revision 0004, ``rotator.core.audit_chain``):
    # the row's place in it and its hash; NULL only on a row rotator did not write.
    Column("chain_seq", Integer),
    Column("chain_hash", String(_HASH)),
    CheckConstraint("kind IN ('intent', 'outcome', 'note')", name="ck_rotation_events_kind"),
)
Index("ix_rotation_events_rotation_op", rotation_events.c.rotation_id, rotation_events.c.op_id)
# One event per place in a target's chain: two writers that read the same head cannot
# both append after it (the second is refused, and appends after the first).
Index("uq_rotation_events_chain", rotation_events.c.target, rotation_events.c.chain_seq,
      unique=True)
Index("ix_rotation_events_target_at", rotation_events.c.target, rotation_events.c.at)

leases = Table(
    "leases",
    metadata,
    Column("target", String(_ID), primary_key=True),
    Column("holder", String(_ID), nullable=False),
    Column("acquired_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    # One more on every acquisition (revision 0003): the fencing token of its holder.
    Column("generation", Integer, nullable=False, server_default=text("0")),
)

pending_cleanups = Table(
    "pending_cleanups",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("target", String(_ID), nullable=False),
    Column("service_account", String(_ID), nullable=False),
    Column("key_id", String(_ID), nullable=False),
    Column("rotation_id", String(_ID), nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("resolved_at", UtcDateTime),
    # The provider whose management key deletes it (revision 0009); NULL on older rows.
    Column("provider", String(_ID)),
)

# One unresolved cleanup per (target, key id): adding it again is a no-op.
Index(
    "uq_pending_cleanups_open",
    pending_cleanups.c.target,
    pending_cleanups.c.key_id,
    unique=True,
    sqlite_where=text("resolved_at IS NULL"),
    postgresql_where=text("resolved_at IS NULL"),
)

notification_outbox = Table(
    "notification_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # What the receiver de-duplicates by: the same for every attempt of this row.
    Column("delivery_id", String(64), nullable=False, unique=True),
    Column("sink", String(_ID), nullable=False),
    Column("dedupe_key", String(400), nullable=False),
    Column("event", String(64), nullable=False),
    Column("target", String(_ID), nullable=False),
    Column("rotation_id", String(_ID)),
    Column("notice", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    # A dispatcher sending the row holds it until then: another replica leaves it alone.
    Column("claimed_by", String(_ID)),
    Column("claimed_until", UtcDateTime),
    Column("last_error", Text),
    Column("delivered_at", UtcDateTime),
)

# One row per sink and condition: a notice enqueued again (every sweep) is a no-op.
Index("uq_notification_outbox_dedupe", notification_outbox.c.sink,
      notification_outbox.c.dedupe_key, unique=True)
Index("ix_notification_outbox_due", notification_outbox.c.delivered_at,
      notification_outbox.c.next_attempt_at)
