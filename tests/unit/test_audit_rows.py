"""The audit rows of whole rotations, field by field, and the Vault metadata they leave.

``rows`` turns what the trail recorded into one tuple per row (step, kind, action, result,
key id, fingerprint, Vault version, request id, detail, seconds since the fake clock's
start); ``assert_paired`` checks that every intent is followed by its outcome with the same
op id and that notes carry none. Each test compares a whole flow against its expected list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest

from rotator.core.errors import ProviderUnavailable
from rotator.core.model import AuditEvent, Rotation, Status, Step, key_name
from rotator.core.ports import NewKey
from rotator.core.secret import Secret
from rotator.core.vocabulary import AuditAction, AuditResult, EventKind, vault_metadata
from tests.fakes import T0, Crash
from tests.unit.test_runner import SCENARIOS, World

Row = tuple[str, str, str, str | None, str | None, str | None, int | None, str | None,
            str | None, float]
NT, IN, OUT = EventKind.NOTE, EventKind.INTENT, EventKind.OUTCOME
A, R = AuditAction, AuditResult
_OP_ID = re.compile(r"[0-9a-f]{32}")
CLOSED = ("the process stopped before recording the outcome; "
          "the step reconciles from the provider and Vault")


class Created:
    """Wraps the provider's create_key to keep every new key (its secret's fingerprint)."""

    def __init__(self, w: World) -> None:
        self.keys: list[NewKey] = []
        real = w.provider.create_key

        def create(*args: Any) -> NewKey:
            new = real(*args)
            self.keys.append(new)
            return new

        w.provider.create_key = create  # type: ignore[method-assign]


def rows(events: list[AuditEvent], rot: Rotation) -> list[Row]:
    assert {(e.rotation_id, e.target) for e in events} == {(rot.rotation_id, "app")}
    out = []
    for e in events:
        assert e.at is not None
        out.append((e.step, e.kind.value, e.action, e.result, e.key_id, e.fingerprint,
                    e.vault_version, e.request_id, e.detail, (e.at - T0).total_seconds()))
    return out


def assert_paired(events: list[AuditEvent]) -> None:
    """Each intent's op id is fresh and its outcome, the next row, repeats it."""
    seen: set[str] = set()
    for i, e in enumerate(events):
        if e.kind is EventKind.NOTE:
            assert e.op_id is None, e
        elif e.kind is EventKind.INTENT:
            assert e.op_id is not None and _OP_ID.fullmatch(e.op_id), e
            assert e.op_id not in seen and e.result is None and e.request_id is None
            seen.add(e.op_id)
            after = events[i + 1]
            assert (after.kind, after.op_id, after.action, after.step) == (
                EventKind.OUTCOME, e.op_id, e.action, e.step)
        else:
            assert events[i - 1].kind is EventKind.INTENT, e
            assert events[i - 1].op_id == e.op_id


@dataclass
class Flow:
    """One rotation run in a world, with what the expected rows are built from."""

    w: World
    rot: Rotation
    created: Created

    @property
    def old(self) -> str:
        assert self.rot.old_key_id is not None
        return self.rot.old_key_id

    @property
    def new(self) -> str:
        assert self.rot.new_key_id is not None
        return self.rot.new_key_id

    def new_fp(self, nth: int = -1) -> str:
        return self.created.keys[nth].secret.fingerprint

    @property
    def old_fp(self) -> str:
        return self.w.first.fingerprint

    @property
    def name(self) -> str:
        return key_name("app", self.rot.rotation_id)

    def rows(self) -> list[Row]:
        events = [e for e in self.w.repo.recorded if e.rotation_id == self.rot.rotation_id]
        assert_paired(events)
        return rows(events, self.rot)

    def start(self) -> list[Row]:
        return [("plan", NT, A.STARTED, R.OK, None, None, None, None,
                 "manual rotation by cli; grace 30s", 0),
                ("plan", NT, A.PLAN, R.OK, self.old, self.old_fp, 1, "req_w", None, 0)]

    def create(self, nth: int = -1, at: float = 0) -> list[Row]:
        new = self.created.keys[nth]
        return [("create", IN, A.CREATE_KEY, None, None, None, None, None, f"name {self.name}",
                 at),
                ("create", OUT, A.CREATE_KEY, R.OK, new.key_id, None, None, "req_c",
                 f"name {self.name}; fingerprint {new.secret.fingerprint}", at)]

    def probe_and_store(self) -> list[Row]:
        fp = self.new_fp()
        return [("verify", NT, A.PROBE, R.OK, self.new, fp, None, "req_w",
                 "authenticated after 1 probe(s)", 0),
                ("store", IN, A.VAULT_WRITE, None, self.new, fp, 1, None, "check-and-set on 1",
                 0),
                ("store", OUT, A.VAULT_WRITE, R.OK, self.new, fp, 2, None, None, 0),
                ("store", NT, A.READ_BACK, R.OK, self.new, fp, 2, None, None, 0)]

    def revoke(self, at: float = 30) -> list[Row]:
        return [("grace", NT, A.GRACE_OVER, R.OK, self.old, None, None, None, None, at),
                ("revoke", IN, A.REVOKE_KEY, None, self.old, None, None, None,
                 "grace window over: deleting the previous key", at),
                ("revoke", OUT, A.REVOKE_KEY, R.OK, self.old, None, None, "req_d", None, at),
                self.probe_revoked("revoke", at)]

    def probe_revoked(self, step: str, at: float) -> Row:
        """The note of the deleted old key's probe (its secret from Vault's version 1)."""
        return (step, NT, A.PROBE_REVOKED, R.REFUSED, self.old, self.old_fp, None, None,
                "refused at probe 1: the provider revoked it", at)

    def delete(self, step: str, key_id: str, why: str, at: float = 0,
               result: AuditResult = R.OK, action: AuditAction = A.DELETE_KEY) -> list[Row]:
        return [(step, IN, action, None, key_id, None, None, None, why, at),
                (step, OUT, action, result, key_id, None, None, "req_d", None, at)]

    def final(self, at: float, version: int | None = None,
              result: AuditResult | None = None) -> list[Row]:
        status = self.rot.status.value
        return [("done", NT, AuditAction(status), result or AuditResult(status), self.new,
                 None, version, None, self.rot.reason, at)]


def run(setup: str = "plain", **world: Any) -> Flow:
    w = World(**world)
    created = Created(w)
    SCENARIOS[setup][0](w)
    return Flow(w, w.runner().rotate(w.spec).rotation, created)


def test_happy_path_rows_and_vault_metadata() -> None:
    f = run()
    assert f.rot.status is Status.COMPLETED and f.rot.reason is None
    assert f.rows() == (f.start() + f.create() + f.probe_and_store() + f.revoke()
                        + f.final(30, version=2))
    assert f.w.store.metadata[("secret", "count/app")] == vault_metadata(
        key_id=f.new, rotation_id=f.rot.rotation_id, created_at="2026-11-01T12:00:00+00:00",
        fingerprint=f.new_fp())


def test_key_limit_rows_record_the_refused_create_and_the_stale_key() -> None:
    f = run("stale_key")
    (stale,) = [k for k in f.w.provider.deleted if k != f.old]
    refused = "KeyLimitReached: key_limit_reached (service_account=sa_1)"
    assert f.rows() == f.start() + [
        ("create", IN, A.CREATE_KEY, None, None, None, None, None, f"name {f.name}", 0),
        ("create", OUT, A.CREATE_KEY, R.ERROR, None, None, None, None, refused, 0),
    ] + f.delete("create", stale, "key limit reached: stale key 'seed' is not in Vault and no "
                 "rotation uses it (last used never)") + f.create() + f.probe_and_store() + (
        f.revoke() + f.final(30, version=2))


def test_never_authenticating_key_rows_end_with_the_rollback() -> None:
    f = run("never_authenticates")
    assert f.rot.status is Status.ROLLED_BACK
    assert f.rows() == f.start() + f.create() + [
        ("verify", NT, A.PROBE, R.ERROR, f.new, None, None, None,
         "6 probe(s) failed; last: 401: not authenticated (yet)", 20),
    ] + f.delete("rollback", f.new, "rollback: the new key is never used", 20) + f.final(20)
    assert f.rot.reason == ("verify: new key did not authenticate within 20s "
                            "(6 probes; last: 401: not authenticated (yet))")


def test_bad_read_back_rows_and_the_restored_versions_metadata() -> None:
    f = run("bad_read_back")
    fp = f.new_fp()
    tampered = Secret("tampered-" + f.created.keys[-1].secret.reveal()).fingerprint
    assert f.rows() == f.start() + f.create() + f.probe_and_store()[:3] + [
        ("store", NT, A.READ_BACK, R.ERROR, f.new, tampered, 2, None, None, 0),
        ("rollback", IN, A.VAULT_RESTORE, None, f.old, f.old_fp, 2, None,
         "restoring version 1 over 2", 0),
        ("rollback", OUT, A.VAULT_RESTORE, R.OK, f.old, f.old_fp, 3, None, None, 0),
    ] + f.delete("rollback", f.new, "rollback: the new key is never used") + f.final(0)
    assert fp != tampered
    assert f.w.store.metadata[("secret", "count/app")] == vault_metadata(
        key_id=f.old, rotation_id=f.rot.rotation_id, created_at="2026-11-01T12:00:00+00:00",
        fingerprint=f.old_fp, restored_from="1")


def test_deferred_revoke_rows_then_the_cleanup_rows() -> None:
    w = World()
    created = Created(w)
    error = ProviderUnavailable("503", request_id="req_503")
    w.provider.fail["delete_key"] = error
    f = Flow(w, w.runner().rotate(w.spec).rotation, created)
    why = f"ProviderUnavailable: {error}"
    assert f.rot.reason == f"old key {f.old} queued for cleanup: {why}"
    assert f.rows() == f.start() + f.create() + f.probe_and_store() + f.revoke()[:2] + [
        ("revoke", OUT, A.REVOKE_KEY, R.ERROR, f.old, None, None, "req_503", why, 30),
        ("revoke", NT, A.CLEANUP_QUEUED, R.DEFERRED, f.old, None, None, None, why, 30),
    ] + f.final(30, version=2, result=R.COMPLETED_PENDING_CLEANUP)
    (queued,) = w.repo.cleanups.values()
    assert (queued.key_id, queued.rotation_id, queued.reason) == (f.old, f.rot.rotation_id, why)
    # The next pass finds the key already gone (deleted by hand): already_gone, not ok.
    del w.provider.fail["delete_key"]
    w.provider.keys.pop(f.old)
    before = len(f.rows())
    assert w.runner().cleanup(w.spec) == (1, 0)
    assert f.rows()[before:] == [
        *f.delete("done", f.old, f"queued: {why}", 30, R.ALREADY_GONE, A.CLEANUP_KEY),
        f.probe_revoked("done", 30)]


def test_resumed_rotation_rows_close_the_open_intent_then_reconcile() -> None:
    w = World()
    created = Created(w)
    w.store.crash_at = "write:after"
    with pytest.raises(Crash):
        w.runner("h1").rotate(w.spec)
    w.store.crash_at = None
    w.clock.sleep(120)
    report = w.runner("h2").rotate(w.spec)
    f = Flow(w, report.rotation, created)
    assert report.resumed and f.rot.status is Status.COMPLETED
    fp = f.new_fp()
    assert f.rows() == f.start() + f.create() + f.probe_and_store()[:2] + [
        ("store", OUT, A.VAULT_WRITE, R.UNKNOWN, f.new, fp, None, None, CLOSED, 120),
        ("store", NT, A.READ_BACK, R.OK, f.new, fp, 2, None,
         "resumed: the interrupted Vault write had landed", 120),
    ] + f.revoke(150) + f.final(150, version=2)


def test_secret_lost_after_create_rows_discard_delete_and_recreate() -> None:
    w = World()
    created = Created(w)
    save = w.repo.save_rotation

    def crash_at_verify(rot: Rotation, lease: Any, ending: Any = None, **more: Any) -> None:
        save(rot, lease, ending, **more)
        if rot.step is Step.VERIFY and len(created.keys) == 1:
            raise Crash("after create")

    w.repo.save_rotation = crash_at_verify  # type: ignore[method-assign]
    with pytest.raises(Crash):
        w.runner("h1").rotate(w.spec)
    w.clock.sleep(120)
    f = Flow(w, w.runner("h2").rotate(w.spec).rotation, created)
    assert f.rot.status is Status.COMPLETED and f.rot.recreate_count == 1
    lost = created.keys[0].key_id
    assert f.rows() == f.start() + f.create(0) + [
        ("verify", NT, A.SECRET_LOST, R.UNKNOWN, lost, None, None, None,
         "restarted after create: the new key's secret is gone; "
         "it will be deleted and a new key created", 120),
    ] + f.delete("create", lost, "left by an interrupted create: its secret was never stored",
                 120) + f.create(1, 120) + [
        (s, k, a, r, kid, fp, v, req, d, 120) for s, k, a, r, kid, fp, v, req, d, _ in
        f.probe_and_store()] + f.revoke(150) + f.final(150, version=2)


def test_plan_row_says_when_vault_metadata_names_another_key() -> None:
    w = World()
    w.store.metadata[("secret", "count/app")] = {"rotator_key_id": "key_0042"}
    rot = w.runner().rotate(w.spec, wait=False).rotation
    (plan,) = [e for e in w.repo.recorded if e.action == AuditAction.PLAN]
    assert plan.detail == f"Vault metadata names key key_0042; the probe says {rot.old_key_id}"


def test_a_step_s_note_is_written_with_its_saved_state_or_not_at_all() -> None:
    """What plan found is in the audit only with plan's state: a crash while saving it
    leaves neither, and the resumed rotation plans again and notes it once."""
    w = World()
    save, crashed = w.repo.save_rotation, []

    def crash_saving_plan(rot: Rotation, lease: Any, ending: Any = None, **more: Any) -> None:
        if rot.step is Step.CREATE and not crashed:
            crashed.append(rot.rotation_id)
            raise Crash("while saving plan")
        save(rot, lease, ending, **more)

    w.repo.save_rotation = crash_saving_plan  # type: ignore[method-assign]
    with pytest.raises(Crash):
        w.runner("h1").rotate(w.spec)
    assert [e.action for e in w.repo.recorded] == [AuditAction.STARTED]
    w.clock.sleep(120)
    done = w.runner("h2").rotate(w.spec).rotation
    assert done.status is Status.COMPLETED and done.rotation_id == crashed[0]
    actions = [e.action for e in w.repo.recorded]
    assert actions.count(AuditAction.PLAN) == 1 and actions[:2] == [AuditAction.STARTED,
                                                                     AuditAction.PLAN]
