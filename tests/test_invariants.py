"""The invariant checker finds each violation it names, and nothing after a clean rotation.

Each violation is produced on purpose (a stray key, a dead key in Vault, a forged audit
trail) against the state store (in memory, and the real SQL repository on both databases),
with the fake provider and Vault.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from sqlalchemy import insert

from rotator.adapters.sql import SqlRepository
from rotator.adapters.sql.tables import rotation_events
from rotator.app.verify import Finding, FindingKind, check_targets
from rotator.core.errors import (
    ProviderUnavailable,
    RotatorError,
    VaultError,
    VaultUnavailable,
)
from rotator.core.model import AuditEvent, Rotation, Status, Step
from rotator.core.ports import SecretRef, VaultSecret
from rotator.core.target import TargetSpec
from rotator.core.vocabulary import EventKind
from rotator.engine.runner import Runner
from tests import writes
from tests.fakes import FakeClock, FakeProvider, FakeStore, MemoryRepository
from tests.fixtures.databases import StateStore

REF = SecretRef("secret", "count/app", "api_key")


class Setup:
    def __init__(self, make_state: Callable[[Callable[[], datetime]], StateStore]) -> None:
        self.clock = FakeClock()
        self.repo = make_state(self.clock.now)
        self.provider = FakeProvider(self.clock)
        self.store = FakeStore()
        self.admin = self.provider.seed("sa_admin")
        self.store.put(REF, self.provider.seed("sa_1"))
        self.spec = TargetSpec(name="app", provider="count", service_account="sa_1", ref=REF,
                               grace_seconds=60, probe_timeout=10, probe_interval=1,
                               management_key=self.admin)

    def runner(self) -> Runner:
        return Runner(providers={"count": self.provider}, store=self.store, repo=self.repo,
                      clock=self.clock, holder="h", lease_ttl=30)

    def check(self) -> list[Finding]:
        return check_targets([self.spec], {"count": self.provider}, self.store, self.repo)

    def kinds(self) -> list[FindingKind]:
        return [f.kind for f in self.check()]


@pytest.fixture
def setup(make_state: Callable[[Callable[[], datetime]], StateStore]) -> Setup:
    return Setup(make_state)


def test_clean_rotations_have_no_findings_at_any_point(setup: Setup) -> None:
    assert setup.check() == []                          # before any rotation
    rot = setup.runner().rotate(setup.spec, wait=False).rotation
    assert rot.step is Step.GRACE
    assert setup.check() == []                          # in grace: both keys accounted for
    setup.clock.sleep(60)
    setup.runner().rotate(setup.spec)
    assert setup.check() == []


def test_a_stray_key_at_the_provider_is_a_leak(setup: Setup) -> None:
    setup.runner().rotate(setup.spec)
    stray = setup.provider.create_key("sa_1", "rotator:app:rot_forgotten", setup.admin)
    (finding,) = setup.check()
    assert finding.kind is FindingKind.LEAKED_KEY and finding.key_id == stray.key_id


def test_a_key_queued_for_cleanup_is_not_a_leak(setup: Setup) -> None:
    from rotator.core.ports import PendingCleanup  # noqa: PLC0415

    stray = setup.provider.create_key("sa_1", "rotator:app:rot_x", setup.admin)
    writes.add_cleanup(setup.repo, PendingCleanup("app", "sa_1", stray.key_id, "rot_x", "test"),
                           setup.clock.now())
    assert setup.check() == []


def test_vault_serving_a_dead_key_is_found(setup: Setup) -> None:
    served = setup.provider.key_of(setup.store.current(REF))
    assert served is not None
    setup.provider.delete_key("sa_1", served, setup.admin)
    assert setup.kinds() == [FindingKind.VAULT_KEY_DEAD]


def test_old_key_dead_during_grace_is_found(setup: Setup) -> None:
    rot = setup.runner().rotate(setup.spec, wait=False).rotation
    assert rot.old_key_id is not None
    setup.provider.delete_key("sa_1", rot.old_key_id, setup.admin)   # revoked by someone
    (finding,) = setup.check()
    assert finding.kind is FindingKind.PREVIOUS_KEY_DEAD_IN_GRACE
    assert finding.rotation_id == rot.rotation_id


def test_a_missing_vault_secret_is_its_own_finding_and_calls_no_key_leaked(
        setup: Setup) -> None:
    setup.store.versions.clear()       # the served key is still live at the provider
    (finding,) = setup.check()
    assert finding.kind is FindingKind.VAULT_SECRET_MISSING
    assert "count/app" in finding.detail and "vault_path of [targets.app]" in finding.detail


def _in_grace_with_two_live_keys(setup: Setup) -> None:
    rot = setup.runner().rotate(setup.spec, wait=False).rotation
    assert rot.step is Step.GRACE and setup.check() == []
    assert len(setup.provider.list_keys("sa_1", setup.admin).keys) == 2


@pytest.mark.parametrize(("error", "hint"), [
    (VaultError("Vault denied the request: permission denied", status=403),
     "the Vault credentials of [vault.auth]"),
    (VaultUnavailable("Vault is sealed", status=503), "[vault] url) is reachable and unsealed"),
])
def test_a_vault_that_cannot_be_read_is_could_not_check_and_nothing_else(
        setup: Setup, error: RotatorError, hint: str) -> None:
    _in_grace_with_two_live_keys(setup)
    setup.store.fail["read"] = error
    (finding,) = setup.check()         # neither live key is called leaked
    assert finding.kind is FindingKind.COULD_NOT_CHECK
    assert "Vault's current key at secret/count/app" in finding.detail
    assert f"status={error.context['status']}" in finding.detail and hint in finding.detail


@pytest.mark.parametrize("call", ["whoami", "list_keys"])
def test_a_provider_that_cannot_answer_is_could_not_check_not_a_dead_or_leaked_key(
        setup: Setup, call: str) -> None:
    _in_grace_with_two_live_keys(setup)
    setup.provider.key_limit = 3
    setup.provider.create_key("sa_1", "rotator:app:rot_stray", setup.admin)
    setup.provider.fail[call] = ProviderUnavailable("HTTP 503", status=503)
    findings = setup.check()
    assert {f.kind for f in findings} == {FindingKind.COULD_NOT_CHECK}
    assert all("status=503" in f.detail and "[providers.count] base_url" in f.detail
               for f in findings)


def test_an_unreadable_previous_version_in_grace_is_could_not_check_not_dead(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    _in_grace_with_two_live_keys(setup)

    def sealed(ref: SecretRef, version: int) -> VaultSecret:
        raise VaultUnavailable("Vault is sealed", status=503)

    monkeypatch.setattr(setup.store, "read_version", sealed)
    (finding,) = setup.check()
    assert finding.kind is FindingKind.COULD_NOT_CHECK
    assert "Vault version 1, which consumers may still hold" in finding.detail


def test_one_unreadable_target_keeps_its_shared_account_from_leaks(setup: Setup) -> None:
    other_ref = SecretRef("secret", "count/other", "api_key")
    setup.store.put(other_ref, setup.provider.seed("sa_1"))
    other = dataclasses.replace(setup.spec, name="other", ref=other_ref)
    setup.provider.key_limit = 3
    setup.provider.create_key("sa_1", "forgotten", setup.admin)
    setup.store.versions.pop((other_ref.mount, other_ref.path))
    findings = check_targets([setup.spec, other], {"count": setup.provider}, setup.store,
                             setup.repo)
    assert [(f.kind, f.target) for f in findings] == [
        (FindingKind.VAULT_SECRET_MISSING, "other")]


def _forged(setup: Setup, actions: list[tuple[str, EventKind, str | None]],
            grace_ends_in: float = 0.0, *, ending: bool = True) -> Rotation:
    """A finished rotation whose audit rows are ``actions``, in order, a second apart.

    With ``ending``, a ``completed`` note closes the trail unless ``actions`` end it.
    """
    if ending and not {"completed", "rolled_back", "failed"} & {a for a, _, _ in actions}:
        actions = [*actions, ("completed", EventKind.NOTE, "completed")]
    now = setup.clock.now()
    rot = Rotation(rotation_id=f"rot_{uuid.uuid4().hex[:8]}", target="app",
                   service_account="sa_1", trigger="manual", actor="test", grace_seconds=0,
                   started_at=now, step=Step.DONE, status=Status.COMPLETED,
                   old_key_id="key_old", new_key_id="key_new",
                   grace_ends_at=now + timedelta(seconds=grace_ends_in), finished_at=now)
    writes.insert_rotation(setup.repo, rot)
    ops: dict[str, str] = {}
    for second, (action, kind, result) in enumerate(actions):
        op_id = None if kind is EventKind.NOTE else ops.setdefault(action, uuid.uuid4().hex)
        key = "key_old" if action == "revoke_key" else "key_new"
        writes.record(setup.repo, AuditEvent(
            rotation_id=rot.rotation_id, target="app", step="x", kind=kind, action=action,
            result=result, key_id=key, op_id=op_id, at=now + timedelta(seconds=second)))
    return rot


GOOD = [("create_key", EventKind.INTENT, None), ("create_key", EventKind.OUTCOME, "ok"),
        ("probe", EventKind.NOTE, "ok"),
        ("vault_write", EventKind.INTENT, None), ("vault_write", EventKind.OUTCOME, "ok"),
        ("read_back", EventKind.NOTE, "ok"), ("grace_over", EventKind.NOTE, "ok"),
        ("revoke_key", EventKind.INTENT, None), ("revoke_key", EventKind.OUTCOME, "ok")]


def _audit_kinds(setup: Setup) -> list[FindingKind]:
    return [f.kind for f in setup.check() if f.rotation_id is not None]


def test_a_forged_good_trail_passes(setup: Setup) -> None:
    _forged(setup, GOOD)
    assert _audit_kinds(setup) == []


def test_revoke_before_grace_over_is_early(setup: Setup) -> None:
    trail = [e for e in GOOD if e[0] != "grace_over"]
    _forged(setup, trail)
    assert _audit_kinds(setup) == [FindingKind.EARLY_REVOKE]


def test_revoke_before_the_grace_deadline_is_early(setup: Setup) -> None:
    _forged(setup, GOOD, grace_ends_in=3600)
    assert _audit_kinds(setup) == [FindingKind.EARLY_REVOKE]


def test_revoke_before_the_read_back_is_early(setup: Setup) -> None:
    trail = [e for e in GOOD if e[0] != "read_back"]
    _forged(setup, trail)
    assert _audit_kinds(setup) == [FindingKind.EARLY_REVOKE]


def test_a_write_to_vault_before_any_probe_is_found(setup: Setup) -> None:
    trail = [e for e in GOOD if e[0] != "probe"]
    _forged(setup, trail)
    assert _audit_kinds(setup) == [FindingKind.UNVERIFIED_IN_VAULT]


def test_an_intent_without_outcome_in_a_finished_rotation_is_found(setup: Setup) -> None:
    trail = [e for e in GOOD if e[:2] != ("vault_write", EventKind.OUTCOME)]
    _forged(setup, trail)
    assert _audit_kinds(setup) == [FindingKind.UNPAIRED_SIDE_EFFECT]


def test_a_second_real_delete_of_the_old_key_is_found(setup: Setup) -> None:
    rot = _forged(setup, GOOD, ending=False)
    for kind, action, op_id in ((EventKind.OUTCOME, "revoke_key", "orphan"),
                                (EventKind.NOTE, "completed", None)):
        writes.record(setup.repo, AuditEvent(
            rotation_id=rot.rotation_id, target="app", step="revoke", kind=kind,
            action=action, result="ok", key_id="key_old", op_id=op_id))
    assert sorted(_audit_kinds(setup)) == sorted([FindingKind.REVOKED_TWICE,
                                                  FindingKind.UNPAIRED_SIDE_EFFECT])


ENDED = ("completed", EventKind.NOTE, "completed")


def test_a_rotation_ended_twice_is_found(setup: Setup) -> None:
    # The zombie of the fencing issue: rolled back after it had completed.
    _forged(setup, [*GOOD, ENDED, ("rolled_back", EventKind.NOTE, "rolled_back")])
    assert sorted(_audit_kinds(setup)) == sorted([
        FindingKind.TWO_ENDINGS,          # two ending notes
        FindingKind.TWO_ENDINGS,          # the last one is not what the row says
        FindingKind.MOVED_BACKWARDS])     # and something was written after the ending


def test_a_finished_rotation_without_its_ending_note_is_found(setup: Setup) -> None:
    _forged(setup, GOOD, ending=False)
    assert _audit_kinds(setup) == [FindingKind.TWO_ENDINGS]


def test_one_ending_and_cleanup_after_it_pass(setup: Setup) -> None:
    _forged(setup, [*GOOD, ENDED, ("cleanup_key", EventKind.INTENT, None),
                    ("cleanup_key", EventKind.OUTCOME, "ok")])
    assert _audit_kinds(setup) == []


def test_a_running_rotation_whose_trail_ended_it_is_found(setup: Setup) -> None:
    now = setup.clock.now()
    rot = Rotation(rotation_id="rot_running", target="app", service_account="sa_1",
                   trigger="manual", actor="test", grace_seconds=0, started_at=now)
    writes.insert_rotation(setup.repo, rot)
    writes.record(setup.repo, AuditEvent(
        rotation_id=rot.rotation_id, target="app", step="done", kind=EventKind.NOTE,
        action="rolled_back", result="rolled_back", at=now))
    assert FindingKind.TWO_ENDINGS in _audit_kinds(setup)


def _running_with_notes(setup: Setup, notes: list[tuple[str, str]]) -> None:
    """A running rotation whose trail is ``notes`` ((step, action), ok), a second apart."""
    now = setup.clock.now()
    rot = Rotation(rotation_id=f"rot_{uuid.uuid4().hex[:8]}", target="app",
                   service_account="sa_1", trigger="manual", actor="test", grace_seconds=0,
                   started_at=now)
    writes.insert_rotation(setup.repo, rot)
    for second, (step, action) in enumerate(notes):
        writes.record(setup.repo, AuditEvent(
            rotation_id=rot.rotation_id, target="app", step=step, kind=EventKind.NOTE,
            action=action, result="ok", at=now + timedelta(seconds=second)))


@pytest.mark.parametrize(("steps", "found"), [
    (["plan", "create", "verify", "store", "grace", "revoke", "done"], False),
    (["plan", "create", "verify", "rollback", "done"], False),
    (["plan", "create", "verify", "store", "create", "verify", "store"], True),
    (["plan", "create", "store", "grace", "plan"], True),
])
def test_a_trail_going_back_to_an_earlier_step_is_found(setup: Setup, steps: list[str],
                                                        found: bool) -> None:
    _running_with_notes(setup, [(step, "note") for step in steps])
    assert (FindingKind.MOVED_BACKWARDS in _audit_kinds(setup)) is found


def test_starting_over_at_create_after_a_lost_secret_is_not_going_back(setup: Setup) -> None:
    _running_with_notes(setup, [("create", "create_key"), ("verify", "secret_lost"),
                                ("create", "create_key"), ("verify", "probe")])
    assert _audit_kinds(setup) == []


def test_a_row_written_by_a_holder_that_had_lost_its_lease_is_found(setup: Setup) -> None:
    # The database refuses such a row, so it can only be forged behind the repository's
    # back: a row of generation 1 after one of generation 2 (two take-overs later).
    now = setup.clock.now()
    rot = Rotation(rotation_id="rot_stale", target="app", service_account="sa_1",
                   trigger="manual", actor="test", grace_seconds=0, started_at=now)
    writes.insert_rotation(setup.repo, rot)
    writes.record(setup.repo, AuditEvent(rotation_id=rot.rotation_id, target="app",
                                         step="plan", kind=EventKind.NOTE, action="plan",
                                         result="ok", at=now))
    _forge_row(setup.repo, AuditEvent(rotation_id=rot.rotation_id, target="app",
                                      step="plan", kind=EventKind.NOTE, action="zombie",
                                      result="ok", at=now), generation=1)
    stale = [f for f in setup.check() if f.kind is FindingKind.STALE_WRITER]
    assert len(stale) == 1 and "generation 1" in stale[0].detail


def _forge_row(repo: StateStore, event: AuditEvent, generation: int) -> None:
    if isinstance(repo, MemoryRepository):
        repo.recorded.append(event)
        repo.generations.append(generation)
        return
    assert isinstance(repo, SqlRepository)
    with repo.engine.begin() as conn:
        conn.execute(insert(rotation_events).values(
            rotation_id=event.rotation_id, target=event.target, step=event.step,
            kind=str(event.kind), action=event.action, result=event.result, at=event.at,
            lease_generation=generation))
