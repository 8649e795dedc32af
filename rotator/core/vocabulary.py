"""The words rotator writes where others read them: the audit trail and Vault's metadata.

    EventKind          rotation_events.kind: intent, outcome, note
    AuditAction        rotation_events.action: what was done or decided
    AuditResult        rotation_events.result: how it went
    Trigger            rotations.trigger: why a rotation started
    VaultMetadataKey   the custom-metadata keys rotator sets on the Vault secret

The values are stored (SQL rows, Vault metadata) and compared by the invariant checker,
the metrics and operators' queries, so they never change: a new word is a new member,
and ``tests/unit/test_vocabulary.py`` pins every value and reads rows written before
this module existed. Standard library only, like the rest of ``rotator.core``.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "MANUAL_TRIGGERS",
    "AuditAction",
    "AuditResult",
    "EventKind",
    "Trigger",
    "VaultMetadataKey",
    "vault_metadata",
]


class EventKind(StrEnum):
    INTENT = "intent"    # recorded before a side effect
    OUTCOME = "outcome"  # recorded after it (ok, error, or unknown after a crash)
    NOTE = "note"        # a decision or a read: plan, probe, grace started, finished


class AuditAction(StrEnum):
    # notes: decisions and reads
    STARTED = "started"
    PLAN = "plan"                      # Vault read and the current key probed
    PROBE = "probe"                    # the new key authenticated (or never did)
    SECRET_LOST = "secret_lost"  # noqa: S105  (resumed without the new key's secret)
    READ_BACK = "read_back"            # Vault read after the write: the proof of store
    GRACE_OVER = "grace_over"          # the old key may go (result: ok, quiet, max_grace_reached)
    GRACE_HELD = "grace_held"          # usage-aware grace: the old key is still used, kept
    CLEANUP_QUEUED = "cleanup_queued"  # the old key's delete deferred to the queue
    PROBE_REVOKED = "probe_revoked"    # the old key probed once it was deleted
    CANCEL = "cancel"                  # `rotator cancel`: who asked and why (ok, refused)
    # side effects: an intent row, then an outcome row
    CREATE_KEY = "create_key"
    DELETE_KEY = "delete_key"          # a key of ours that must not live (left, stale)
    REVOKE_KEY = "revoke_key"          # the previous key, after grace
    CLEANUP_KEY = "cleanup_key"        # a queued deletion (also a note when kept)
    VAULT_WRITE = "vault_write"
    VAULT_RESTORE = "vault_restore"    # a rollback puts the previous version back
    DELETE_STRAY = "delete_stray"      # `rotator reconcile --fix`: a key nothing accounts for
    # the last note of a rotation: its final status, spelt as ``Status``
    COMPLETED = "completed"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


class AuditResult(StrEnum):
    OK = "ok"
    ERROR = "error"
    UNKNOWN = "unknown"            # the process stopped before it learned the outcome
    ALREADY_GONE = "already_gone"  # a delete found no key: not a second deletion
    DEFERRED = "deferred"          # queued for the next cleanup pass
    KEPT = "kept"                  # queued for deletion, but Vault serves it
    REFUSED = "refused"            # a deleted key's probe: the provider refuses it
    STILL_VALID = "still_valid"    # a deleted key's probe: it still authenticates
    # usage-aware grace (``grace_held`` and ``grace_over`` notes)
    IN_USE = "in_use"              # the old key was used within the quiet period: held
    QUIET = "quiet"                # unused for the quiet period: it goes
    MAX_GRACE_REACHED = "max_grace_reached"   # held as long as allowed: it goes, used or not
    # the result of the final note, spelt as ``Status``
    COMPLETED = "completed"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    # ... but for a completion whose old key could not be deleted: Vault serves the new
    # key, and the old one still lives, queued for cleanup (the action says completed)
    COMPLETED_PENDING_CLEANUP = "completed_pending_cleanup"


class Trigger(StrEnum):
    """Why a rotation started, as ``rotations.trigger`` keeps it."""

    MANUAL = "manual"                  # `rotator rotate` (before 0007: `run --rotate` too)
    RUN_ROTATE = "run_rotate"          # `rotator run --rotate` or `--rotate-all`
    SCHEDULE = "schedule"              # the target's schedule came due
    FIRST_ROTATION = "first_rotation"  # the schedule's first rotation: the key's age unknown
    MAX_KEY_AGE = "max_key_age"        # the key reached the schedule's max_key_age


# Asked for by an operator, not by a schedule: what ``audit_manual_rotations`` lists.
MANUAL_TRIGGERS = frozenset({Trigger.MANUAL, Trigger.RUN_ROTATE})


class VaultMetadataKey(StrEnum):
    """Custom metadata on the secret: which key and rotation wrote the current version."""

    KEY_ID = "rotator_key_id"
    ROTATION_ID = "rotator_rotation_id"
    CREATED_AT = "rotator_created_at"
    FINGERPRINT = "rotator_fingerprint"
    RESTORED_FROM = "rotator_restored_from"   # set by a rollback's restore only


def vault_metadata(*, key_id: str, rotation_id: str, created_at: str, fingerprint: str,
                   restored_from: str | None = None) -> dict[str, str]:
    """The custom metadata of a version rotator writes, keyed by plain strings.

    Plain ``str`` keys (not the members) so that what reaches the Vault adapter and its
    JSON is exactly what it always was, whatever a serialiser does with ``str`` subclasses.
    """
    metadata = {
        VaultMetadataKey.KEY_ID.value: key_id,
        VaultMetadataKey.ROTATION_ID.value: rotation_id,
        VaultMetadataKey.CREATED_AT.value: created_at,
        VaultMetadataKey.FINGERPRINT.value: fingerprint,
    }
    if restored_from is not None:
        metadata[VaultMetadataKey.RESTORED_FROM.value] = restored_from
    return metadata
