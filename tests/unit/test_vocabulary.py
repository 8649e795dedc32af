"""The stored vocabulary keeps its exact values, and rows written before it read back.

``tests/data/rows_written_before_vocabulary.json`` holds the rows the code wrote before
``rotator.core.vocabulary`` existed (twelve rotation flows on SQLite with the fakes:
completed, rolled back, refused, deferred revoke, cleanup, CAS lost, tampered read-back
with a Vault restore, lost secret, crash mid-side-effect, blocked rollback, key limit,
kept cleanup, already gone). They are loaded into a fresh database, read through the
repository, parsed with the enums and checked by the invariant checker.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, get_args

import pytest
from sqlalchemy import insert

from rotator.adapters.sql.repository import SqlRepository
from rotator.adapters.sql.schema import make_engine
from rotator.adapters.sql.tables import metadata, pending_cleanups, rotation_events, rotations
from rotator.app import verify
from rotator.core.model import TERMINAL_STATUSES, Step
from rotator.core.vocabulary import (
    MANUAL_TRIGGERS,
    AuditAction,
    AuditResult,
    EventKind,
    Trigger,
    VaultMetadataKey,
    vault_metadata,
)
from rotator.engine.crashpoints import STARTED, Moment, effect_point, step_point
from rotator.scheduling.schedule import Reason

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "rows_written_before_vocabulary.json"
_TIMESTAMPS = {"at", "started_at", "grace_ends_at", "finished_at", "updated_at",
               "created_at", "resolved_at"}


def test_event_kinds_keep_their_values() -> None:
    assert {m.name: m.value for m in EventKind} == {
        "INTENT": "intent", "OUTCOME": "outcome", "NOTE": "note"}


def test_audit_actions_keep_their_values() -> None:
    assert {m.name: m.value for m in AuditAction} == {
        "STARTED": "started", "PLAN": "plan", "PROBE": "probe",
        "SECRET_LOST": "secret_lost", "READ_BACK": "read_back", "GRACE_OVER": "grace_over",
        "GRACE_HELD": "grace_held",
        "CLEANUP_QUEUED": "cleanup_queued", "PROBE_REVOKED": "probe_revoked",
        "CANCEL": "cancel", "CREATE_KEY": "create_key",
        "DELETE_KEY": "delete_key", "REVOKE_KEY": "revoke_key", "CLEANUP_KEY": "cleanup_key",
        "VAULT_WRITE": "vault_write", "VAULT_RESTORE": "vault_restore",
        "DELETE_STRAY": "delete_stray",
        "COMPLETED": "completed", "ROLLED_BACK": "rolled_back", "FAILED": "failed",
    }


def test_audit_results_keep_their_values() -> None:
    assert {m.name: m.value for m in AuditResult} == {
        "OK": "ok", "ERROR": "error", "UNKNOWN": "unknown", "ALREADY_GONE": "already_gone",
        "DEFERRED": "deferred", "KEPT": "kept", "REFUSED": "refused",
        "STILL_VALID": "still_valid", "IN_USE": "in_use", "QUIET": "quiet",
        "MAX_GRACE_REACHED": "max_grace_reached", "COMPLETED": "completed",
        "ROLLED_BACK": "rolled_back", "FAILED": "failed",
        "COMPLETED_PENDING_CLEANUP": "completed_pending_cleanup",
    }


def test_the_last_note_of_every_end_is_spelt_as_its_status() -> None:
    for status in TERMINAL_STATUSES:
        assert AuditAction(status.value) == status.value == AuditResult(status.value)


def test_triggers_keep_their_values_and_the_manual_ones_are_both_commands() -> None:
    assert {m.name: m.value for m in Trigger} == {
        "MANUAL": "manual", "RUN_ROTATE": "run_rotate", "SCHEDULE": "schedule",
        "FIRST_ROTATION": "first_rotation", "MAX_KEY_AGE": "max_key_age"}
    assert {Trigger.MANUAL, Trigger.RUN_ROTATE} == MANUAL_TRIGGERS
    # Every reason a schedule gives is a trigger that can be stored and filtered on.
    assert set(get_args(Reason)) <= {t.value for t in Trigger} - MANUAL_TRIGGERS


def test_vault_metadata_keys_keep_their_values() -> None:
    assert {m.name: m.value for m in VaultMetadataKey} == {
        "KEY_ID": "rotator_key_id", "ROTATION_ID": "rotator_rotation_id",
        "CREATED_AT": "rotator_created_at", "FINGERPRINT": "rotator_fingerprint",
        "RESTORED_FROM": "rotator_restored_from",
    }


def test_vault_metadata_is_plain_strings_in_the_order_always_written() -> None:
    written = vault_metadata(key_id="k2", rotation_id="r1", created_at="t", fingerprint="f")
    assert list(written.items()) == [("rotator_key_id", "k2"), ("rotator_rotation_id", "r1"),
                                     ("rotator_created_at", "t"), ("rotator_fingerprint", "f")]
    assert all(type(k) is str for k in written)
    restored = vault_metadata(key_id="k1", rotation_id="r1", created_at="t", fingerprint="f",
                              restored_from="1")
    assert list(restored)[-1] == "rotator_restored_from" and restored[list(restored)[-1]] == "1"


def test_crash_point_names_keep_their_spelling() -> None:
    assert STARTED == "started"
    assert effect_point(AuditAction.VAULT_WRITE, Moment.AFTER) == "vault_write:after"
    assert effect_point(AuditAction.CREATE_KEY, Moment.BEFORE) == "create_key:before"
    assert step_point(Step.CREATE) == "step:create"
    assert type(effect_point(AuditAction.PLAN, Moment.AFTER)) is str


def _fixture() -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = json.loads(FIXTURE.read_text())
    return rows


def _as_row(stored: dict[str, Any]) -> dict[str, Any]:
    return {k: datetime.fromisoformat(v) if k in _TIMESTAMPS and v else v
            for k, v in stored.items()}


@pytest.fixture
def old_rows(tmp_path: Path) -> SqlRepository:
    """A database holding exactly the rows of the fixture."""
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    metadata.create_all(engine)
    data = _fixture()
    with engine.begin() as conn:
        for table in (rotations, rotation_events, pending_cleanups):
            conn.execute(insert(table), [_as_row(r) for r in data[table.name]])
    return SqlRepository(engine)


# Words added after the fixture's rows were written: the probe of a deleted old key, a
# cancel, the deletion of a stray key, and a grace window held while the old key is used.
_NEWER_ACTIONS = {AuditAction.PROBE_REVOKED, AuditAction.CANCEL, AuditAction.DELETE_STRAY,
                  AuditAction.GRACE_HELD}
_NEWER_RESULTS = {AuditResult.REFUSED, AuditResult.STILL_VALID,
                  AuditResult.COMPLETED_PENDING_CLEANUP, AuditResult.IN_USE,
                  AuditResult.QUIET, AuditResult.MAX_GRACE_REACHED}


def test_every_stored_word_is_a_member_and_every_member_was_stored(
        old_rows: SqlRepository) -> None:
    events = old_rows.events()
    assert len(events) == len(_fixture()["rotation_events"])
    assert {EventKind(e.kind) for e in events} == set(EventKind)
    assert {AuditAction(e.action) for e in events} == set(AuditAction) - _NEWER_ACTIONS
    assert {AuditResult(e.result) for e in events
            if e.result is not None} == set(AuditResult) - _NEWER_RESULTS
    # Outcome and note rows always say how it went; intents never do.
    assert all((e.result is None) == (e.kind is EventKind.INTENT) for e in events)


def test_the_invariant_checker_reads_old_rows_with_the_enums(old_rows: SqlRepository) -> None:
    by_rotation: dict[str, list[verify.StoredEvent]] = {}
    for event in old_rows.events():
        by_rotation.setdefault(event.rotation_id, []).append(event)
    rotations_read = old_rows.rotations()
    assert len(rotations_read) == len(_fixture()["rotations"])
    assert all(r.is_terminal for r in rotations_read)
    for rot in rotations_read:
        assert verify._audit_findings(rot, by_rotation[rot.rotation_id]) == []
    # The checker's comparisons matched old rows (a clean trail is not a blind one).
    probe_ok = [e for e in old_rows.events()
                if e.action == AuditAction.PROBE and e.result == AuditResult.OK]
    assert probe_ok and all(e.key_id for e in probe_ok)


def test_old_vault_metadata_uses_the_keys() -> None:
    written = _fixture()["vault_custom_metadata"]
    assert written
    for stored in written:
        assert {VaultMetadataKey(k) for k in stored} <= set(VaultMetadataKey)
        rebuilt = vault_metadata(
            key_id=stored[VaultMetadataKey.KEY_ID],
            rotation_id=stored[VaultMetadataKey.ROTATION_ID],
            created_at=stored[VaultMetadataKey.CREATED_AT],
            fingerprint=stored[VaultMetadataKey.FINGERPRINT],
            restored_from=stored.get(VaultMetadataKey.RESTORED_FROM))
        assert rebuilt == stored
    assert any(VaultMetadataKey.RESTORED_FROM in m for m in written)


def test_the_schema_admits_exactly_the_event_kinds() -> None:
    # The CHECK constraint is spelt in the migration too; a new kind needs a migration.
    (check,) = [c for c in rotation_events.constraints
                if c.name == "ck_rotation_events_kind"]
    listed = str(check.sqltext)  # type: ignore[attr-defined]
    assert listed == "kind IN (" + ", ".join(f"'{k.value}'" for k in EventKind) + ")"
