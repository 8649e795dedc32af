"""Revoke, rollback and the cleanup queue, driven one call at a time against the fakes.

Each test builds the rotation at the step it needs, so that a branch the flows reach only
by an unlucky interleaving (Vault unreadable at revoke, Vault serving a key the rollback
would delete, a queue with several items) is checked directly.
"""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from rotator.core import machine as m
from rotator.core.errors import ProviderError, ProviderUnavailable, VaultUnavailable
from rotator.core.model import Rotation, Status, Step, key_name
from rotator.core.ports import PendingCleanup
from rotator.core.secret import Secret
from rotator.core.vocabulary import AuditAction, AuditResult, EventKind
from rotator.engine.audit_trail import AuditTrail
from rotator.engine.unwind import Unwinder
from tests.fakes import T0
from tests.unit.test_runner import REF, World
from tests.unit.test_runner_behaviour import spy

RID = "rot_20261101T120000_abcdef"


class NotesAtOnce(AuditTrail):
    """A trail that writes a step's notes as they are made: these tests call one step and
    read the rows it wrote. (The runner saves them with the step's state: test_audit_rows.)"""

    def note_with_step(self, rotation: Rotation, action: AuditAction, **fields: Any) -> None:
        self.note(rotation, action, **fields)


class Bench:
    """A World, a lease on its target, and an Unwinder under it."""

    def __init__(self, **provider_kw: object) -> None:
        self.w = World(**provider_kw)
        lease = self.w.repo.acquire_lease("app", "h1", 60, self.w.clock.now())
        assert lease is not None
        self.lease = lease
        self.fresh: dict[str, Secret] = {}
        trail = NotesAtOnce(self.w.repo, self.w.clock, lease, lambda: None)
        self.unwind = Unwinder(self.w.provider, self.w.store, self.w.repo, self.w.clock,
                               trail, self.fresh)
        self.old = self.w.provider.key_of(self.w.first)
        # (service account, key id) of every delete_key call
        self.accounts = spy(self.w.provider, "delete_key", lambda account, key_id, _: (account,
                                                                                       key_id))

    def key(self, name: str) -> tuple[str, Secret]:
        made = self.w.provider._make("sa_1", name, live=True)
        return made.key_id, Secret(made.secret)

    def rotation(self, step: Step, rotation_id: str = RID, **kw: object) -> Rotation:
        rot = Rotation(rotation_id=rotation_id, target="app", service_account="sa_1",
                       trigger="manual", actor="cli", grace_seconds=30, started_at=T0,
                       step=step, old_key_id=self.old, old_version=1).evolve(**kw)
        self.w.repo.insert_rotation(rot, self.lease)
        return rot

    def stored(self, step: Step) -> tuple[Rotation, Secret]:
        """A rotation whose new key is in Vault as version 2, written by the rotation."""
        new_id, secret = self.key(key_name("app", RID))
        rot = self.rotation(step, new_key_id=new_id, new_fingerprint=secret.fingerprint)
        self.w.store.write(REF, secret, 1, {"rotator_rotation_id": RID,
                                            "rotator_key_id": new_id})
        return rot, secret

    def queued(self) -> list[tuple[str, str]]:
        return [(c.key_id, c.reason) for c in self.w.repo.cleanups.values()]


# -- revoke -----------------------------------------------------------------------------
def test_revoke_deletes_the_old_key_at_its_service_account() -> None:
    b = Bench()
    rot, _ = b.stored(Step.REVOKE)
    assert b.unwind.revoke(rot, b.w.spec) == m.Revoked(already_gone=False)
    assert b.accounts == [("sa_1", b.old)]


def test_revoke_of_an_old_key_already_gone_says_so() -> None:
    b = Bench()
    rot, _ = b.stored(Step.REVOKE)
    assert b.old is not None
    del b.w.provider.keys[b.old]
    assert b.unwind.revoke(rot, b.w.spec) == m.Revoked(already_gone=True)


def test_revoke_defers_when_vault_serves_the_old_key_again() -> None:
    b = Bench()
    rot, _ = b.stored(Step.REVOKE)
    b.w.store.put(REF, b.w.first)
    why = "Vault serves the old key again; not revoking it"
    stamps = spy(b.w.repo, "add_cleanup", lambda item, now, lease: (now, lease))
    with capture_logs() as logs:
        assert b.unwind.revoke(rot, b.w.spec) == m.RevokeDeferred(why)
    assert logs == [
        {"event": "vault_serves_old_key", "log_level": "error", "key_id": b.old},
        {"event": "revoke_deferred", "log_level": "warning", "key_id": b.old, "reason": why},
    ]
    assert stamps == [(T0, b.lease)]
    assert b.accounts == [] and b.queued() == [(b.old, why)]
    (item,) = b.w.repo.cleanups.values()
    assert item == PendingCleanup("app", "sa_1", b.old or "", RID, why, "count")


@pytest.mark.parametrize(("fake", "call", "error", "why"), [
    ("store", "read", VaultUnavailable("sealed"), "sealed"),              # Vault unreadable
    ("provider", "whoami", ProviderUnavailable("503 on whoami"), "503 on whoami"),  # no probe
    ("provider", "delete_key", ProviderUnavailable("503"), "ProviderUnavailable: 503"),
])
def test_revoke_defers_when_it_cannot_tell_what_vault_serves_or_delete(
        fake: str, call: str, error: Exception, why: str) -> None:
    b = Bench()
    rot, _ = b.stored(Step.REVOKE)
    getattr(b.w, fake).fail[call] = error
    assert b.unwind.revoke(rot, b.w.spec) == m.RevokeDeferred(why)
    assert b.queued() == [(b.old, why)] and b.old in b.w.account_keys()


# -- rollback ---------------------------------------------------------------------------
def test_rollback_deletes_only_the_keys_of_this_rotation() -> None:
    b = Bench()
    other, _ = b.key("someone else's key")
    theirs, _ = b.key(key_name("app", "rot_other"))
    dup, _ = b.key(key_name("app", RID))          # our name, not our recorded key id
    new_id, secret = b.key("renamed by hand")      # our key id, not our name
    rot = b.rotation(Step.ROLLBACK, new_key_id=new_id, new_fingerprint=secret.fingerprint)
    b.fresh[RID] = secret
    rot = rot.evolve(reason="verify: never authenticated")
    with capture_logs() as logs:
        assert b.unwind.rollback(rot, b.w.spec) == m.RolledBack(cleanup_pending=False)
    assert logs == [{"event": "rotation_rolled_back", "log_level": "error",
                     "reason": "verify: never authenticated"}]
    assert sorted(b.accounts) == sorted([("sa_1", dup), ("sa_1", new_id)])
    assert b.w.account_keys() == {b.old, other, theirs}
    assert RID not in b.fresh                       # the secret is dropped from memory


def test_rollback_never_deletes_the_old_key_even_under_our_name() -> None:
    b = Bench()
    assert b.old is not None
    b.w.provider.keys[b.old].name = key_name("app", RID)
    rot = b.rotation(Step.ROLLBACK, new_key_id=b.old)
    assert b.unwind.rollback(rot, b.w.spec) == m.RolledBack(cleanup_pending=False)
    assert b.accounts == [] and b.old in b.w.account_keys()


def test_rollback_with_nothing_to_delete_does_not_ask_who_vault_serves() -> None:
    b = Bench()
    rot = b.rotation(Step.ROLLBACK)
    b.w.provider.fail["whoami"] = ProviderUnavailable("503")
    assert b.unwind.rollback(rot, b.w.spec) == m.RolledBack(cleanup_pending=False)


def test_rollback_does_not_delete_a_new_key_vault_still_serves() -> None:
    # Vault serves the new key, but nothing marks the version as this rotation's (no
    # fingerprint recorded, no metadata): restore leaves it, and the delete must not go.
    b = Bench()
    new_id, secret = b.key(key_name("app", RID))
    rot = b.rotation(Step.ROLLBACK, new_key_id=new_id)
    b.w.store.put(REF, secret)
    out = b.unwind.rollback(rot, b.w.spec)
    assert out == m.RollbackBlocked(f"Vault still serves the new key {new_id}; not deleting it")
    assert b.accounts == [] and new_id in b.w.account_keys()


@pytest.mark.parametrize(("call", "why"), [
    ("whoami", "cannot tell which key Vault serves: 503"),
    ("delete_key", "cannot delete the new key {key}: 503"),
])
def test_a_transient_failure_blocks_the_rollback(call: str, why: str) -> None:
    b = Bench()
    new_id, _ = b.key(key_name("app", RID))
    rot = b.rotation(Step.ROLLBACK, new_key_id=new_id)
    b.w.provider.fail[call] = ProviderUnavailable("503")
    assert b.unwind.rollback(rot, b.w.spec) == m.RollbackBlocked(why.format(key=new_id))
    assert new_id in b.w.account_keys() and not b.w.repo.cleanups


def test_a_key_the_rollback_cannot_delete_for_good_is_queued() -> None:
    b = Bench()
    new_id, secret = b.key(key_name("app", RID))
    rot = b.rotation(Step.ROLLBACK, new_key_id=new_id, new_fingerprint=secret.fingerprint)
    b.fresh[RID] = secret
    b.w.provider.fail["delete_key"] = ProviderError("403 forbidden")
    stamps = spy(b.w.repo, "add_cleanup", lambda item, now, lease: (now, lease))
    assert b.unwind.rollback(rot, b.w.spec) == m.RolledBack(cleanup_pending=True)
    assert stamps == [(T0, b.lease)]
    (item,) = b.w.repo.cleanups.values()
    assert item == PendingCleanup("app", "sa_1", new_id, RID,
                                  "rollback could not delete: 403 forbidden", "count")
    assert RID not in b.fresh


def test_rollback_restores_vault_when_the_fingerprint_matches() -> None:
    b = Bench()
    rot, _ = b.stored(Step.ROLLBACK)
    b.w.store.metadata.clear()                     # no metadata names the rotation
    assert b.unwind.rollback(rot, b.w.spec) == m.RolledBack(cleanup_pending=False)
    assert b.w.store.current(REF) == b.w.first
    assert b.w.account_keys() == {b.old}


def test_rollback_restores_vault_when_the_metadata_names_the_rotation() -> None:
    b = Bench()
    rot, _ = b.stored(Step.ROLLBACK)
    rot = rot.evolve(new_fingerprint="sha256:000000000000")   # a read that does not match
    assert b.unwind.rollback(rot, b.w.spec) == m.RolledBack(cleanup_pending=False)
    assert b.w.store.current(REF) == b.w.first
    assert b.w.account_keys() == {b.old}


def test_rollback_leaves_a_vault_version_that_is_not_ours() -> None:
    b = Bench()
    new_id, secret = b.key(key_name("app", RID))
    rot = b.rotation(Step.ROLLBACK, new_key_id=new_id, new_fingerprint=secret.fingerprint)
    theirs = b.w.provider.seed("sa_1")
    b.w.store.write(REF, theirs, 1, {"rotator_rotation_id": "rot_other"})
    assert b.unwind.rollback(rot, b.w.spec) == m.RolledBack(cleanup_pending=False)
    assert b.w.store.current(REF) == theirs and b.w.store.writes == 1


def test_rollback_blocks_when_vault_cannot_be_read() -> None:
    b = Bench()
    rot, _ = b.stored(Step.ROLLBACK)
    b.w.store.fail["read"] = VaultUnavailable("sealed")
    assert b.unwind.rollback(rot, b.w.spec) == m.RollbackBlocked("cannot read Vault: sealed")


# -- the cleanup queue ------------------------------------------------------------------
def _queue(b: Bench, *items: tuple[str, str]) -> None:
    for key_id, rotation_id in items:
        b.w.repo.add_cleanup(PendingCleanup("app", "sa_q", key_id, rotation_id, "queued"),
                             b.w.clock.now(), b.lease)


def test_cleanup_of_an_empty_queue_touches_nothing() -> None:
    b = Bench()
    assert b.unwind.cleanup(b.w.spec) == (0, 0)
    assert b.w.store.calls == [] and b.w.provider.calls == []


def test_cleanup_with_vault_unreadable_keeps_every_item() -> None:
    b = Bench()
    rot = b.rotation(Step.DONE, status=Status.COMPLETED)
    k1, _ = b.key("one")
    k2, _ = b.key("two")
    _queue(b, (k1, rot.rotation_id), (k2, rot.rotation_id))
    b.w.store.fail["read"] = VaultUnavailable("sealed")
    with capture_logs() as logs:
        assert b.unwind.cleanup(b.w.spec) == (0, 2)
    assert logs == [{"event": "cannot_tell_served_key", "log_level": "error",
                     "error": "sealed"}]
    assert len(b.w.repo.cleanups) == 2 and b.accounts == []


def test_cleanup_goes_on_past_an_item_it_skips_keeps_or_fails() -> None:
    b = Bench()
    rot = b.rotation(Step.DONE, status=Status.COMPLETED)
    gone, _ = b.key("rotation unknown")
    failing, _ = b.key("delete fails")
    k1, _ = b.key("one")
    k2, _ = b.key("two")
    assert b.old is not None
    _queue(b, (gone, "rot_unknown"), (b.old, rot.rotation_id), (failing, rot.rotation_id),
           (k1, rot.rotation_id), (k2, rot.rotation_id))
    delete = b.w.provider.delete_key

    def fail_one(account: str, key_id: str, auth: Secret) -> Any:
        if key_id == failing:
            raise ProviderUnavailable("503")
        return delete(account, key_id, auth)

    b.w.provider.delete_key = fail_one  # type: ignore[method-assign]
    # deleted k1 and k2; pending: the unknown rotation's and the failed one; kept: old
    with capture_logs() as logs:
        assert b.unwind.cleanup(b.w.spec) == (2, 2)
    assert logs == [{"event": "cleanup_failed", "log_level": "warning", "key_id": failing,
                     "error": "503"}]
    assert b.accounts == [("sa_q", k1), ("sa_q", k2)]     # at the queued account
    assert sorted(k for k, _ in b.queued()) == sorted([gone, failing])
    assert b.old in b.w.account_keys()
    kept = [e for e in b.w.repo.recorded
            if e.action == AuditAction.CLEANUP_KEY and e.result == AuditResult.KEPT]
    assert [(e.kind, e.key_id, e.detail) for e in kept] == [
        (EventKind.NOTE, b.old, "queued for deletion, but Vault serves it: kept")]
