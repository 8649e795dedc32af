"""The runner against fake ports: every flow and failure branch, and a crash at every call."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import pytest

from rotator.core.errors import CasConflict, LeaseHeld, ProviderUnavailable, VaultUnavailable
from rotator.core.model import AuditEvent, FailureCode, Rotation, Status, Step
from rotator.core.ports import Lease, SecretRef
from rotator.core.secret import Secret
from rotator.core.target import TargetSpec
from rotator.core.vocabulary import AuditAction, AuditResult, EventKind
from rotator.engine.runner import Runner
from tests.fakes import Crash, FakeClock, FakeProvider, FakeStore, MemoryRepository

REF = SecretRef("secret", "count/app", "api_key")


class World:
    def __init__(self, *, self_mode: bool = False, **provider_kw: object) -> None:
        self.clock = FakeClock()
        self.provider = FakeProvider(self.clock, **provider_kw)  # type: ignore[arg-type]
        self.store = FakeStore()
        self.repo = MemoryRepository()
        self.admin = None if self_mode else self.provider.seed("sa_admin")
        self.first = self.provider.seed("sa_1")
        self.store.put(REF, self.first)
        self.spec = TargetSpec(name="app", provider="count", service_account="sa_1", ref=REF,
                               grace_seconds=30, probe_timeout=20, probe_interval=1,
                               management_key=self.admin)

    def runner(self, holder: str = "h1") -> Runner:
        return Runner(providers={"count": self.provider}, store=self.store, repo=self.repo,
                      clock=self.clock, holder=holder, lease_ttl=60, rollback_retry_delay=1)

    def account_keys(self) -> set[str]:
        return {k.key_id for k in self.provider.keys.values() if k.account == "sa_1"}

    def vault_key(self) -> str | None:
        return self.provider.key_of(self.store.current(REF))

    def assert_invariants(self) -> None:
        current = self.store.current(REF)
        who = self.provider.whoami(current)            # the key Vault serves authenticates
        assert who.service_account_id == "sa_1"
        assert self.account_keys() == {who.key_id}       # and no key leaked
        closed = {e.op_id for e in self.repo.recorded if e.kind is EventKind.OUTCOME}
        intents = [e for e in self.repo.recorded if e.kind is EventKind.INTENT]
        assert intents and all(e.op_id in closed for e in intents)
        issued = [k.secret for k in self.provider.keys.values()] + [self.first.reveal()]
        dump = repr([asdict(e) for e in self.repo.recorded]) + repr(self.repo.by_id)
        assert not [s for s in issued if s in dump]


def test_full_rotation_replaces_the_key_and_deletes_the_old_one_once() -> None:
    w = World()
    old = w.vault_key()
    report = w.runner().rotate(w.spec)
    rot = report.rotation
    assert rot.status is Status.COMPLETED and rot.step is Step.DONE
    assert w.vault_key() == rot.new_key_id != old
    assert w.provider.deleted == [old]
    assert w.store.metadata[("secret", "count/app")]["rotator_key_id"] == rot.new_key_id
    assert rot.old_version == 1 and rot.new_version == 2
    w.assert_invariants()


def test_old_key_keeps_working_during_grace_and_is_revoked_after() -> None:
    w = World()
    rot = w.runner().rotate(w.spec, wait=False).rotation
    assert rot.step is Step.GRACE
    assert w.provider.whoami(w.first).key_id == rot.old_key_id
    w.clock.sleep(29)
    assert w.runner().rotate(w.spec, wait=False).rotation.step is Step.GRACE
    w.clock.sleep(1)
    done = w.runner().rotate(w.spec).rotation
    assert done.rotation_id == rot.rotation_id and done.status is Status.COMPLETED
    assert rot.old_key_id not in w.account_keys()


def test_self_mode_manages_keys_with_the_accounts_own_key() -> None:
    w = World(self_mode=True)
    assert w.runner().rotate(w.spec).rotation.status is Status.COMPLETED
    w.assert_invariants()


def test_new_key_that_never_authenticates_rolls_back_without_touching_vault() -> None:
    w = World(never_authenticates=True)
    rot = w.runner().rotate(w.spec).rotation
    assert rot.status is Status.ROLLED_BACK and "did not authenticate" in (rot.reason or "")
    assert w.store.writes == 0 and w.store.current(REF) == w.first
    assert w.account_keys() == {w.provider.key_of(w.first)}
    w.assert_invariants()


def test_propagation_delay_is_waited_out() -> None:
    w = World(propagation=7)
    assert w.runner().rotate(w.spec).rotation.status is Status.COMPLETED


@pytest.mark.parametrize("error", [CasConflict("cas"), VaultUnavailable("down")])
def test_failed_vault_write_deletes_the_new_key(error: Exception) -> None:
    w = World()
    w.store.fail["write"] = error
    rot = w.runner().rotate(w.spec).rotation
    assert rot.status is Status.ROLLED_BACK
    assert w.store.current(REF) == w.first and w.provider.deleted == [rot.new_key_id]
    w.assert_invariants()


def test_bad_read_back_restores_the_previous_version() -> None:
    w = World()
    w.store.tamper_read_back = True
    rot = w.runner().rotate(w.spec).rotation
    assert rot.status is Status.ROLLED_BACK and "read-back" in (rot.reason or "")
    assert w.store.current(REF) == w.first            # restored as version 3
    assert len(w.store.versions[("secret", "count/app")]) == 3
    w.assert_invariants()


def test_vault_key_that_does_not_authenticate_is_refused() -> None:
    w = World()
    w.store.put(REF, Secret("cnt_not_a_real_key_at_all_000000"))
    rot = w.runner().rotate(w.spec).rotation
    assert rot.status is Status.FAILED and "does not authenticate" in (rot.reason or "")
    assert "create_key" not in w.provider.calls


def test_key_limit_deletes_a_stale_key_but_never_the_current_one() -> None:
    w = World()
    stale = w.provider.seed("sa_1")  # a second key: the account is at its limit of 2
    rot = w.runner().rotate(w.spec).rotation
    assert rot.status is Status.COMPLETED
    assert w.provider.key_of(stale) is None and rot.old_key_id in w.provider.deleted
    reasons = [e.detail or "" for e in w.repo.recorded if e.action == "delete_key"]
    assert any("key limit reached" in r for r in reasons)


def test_key_limit_with_nothing_deletable_rolls_back() -> None:
    w = World(key_limit=1)
    rot = w.runner().rotate(w.spec).rotation
    assert rot.status is Status.ROLLED_BACK and "key limit" in (rot.reason or "")
    w.assert_invariants()


def test_failed_revoke_is_queued_and_cleaned_by_the_next_run() -> None:
    w = World()
    w.provider.fail["delete_key"] = ProviderUnavailable("503")
    rot = w.runner().rotate(w.spec).rotation
    assert rot.status is Status.COMPLETED and "queued for cleanup" in (rot.reason or "")
    assert len(w.repo.cleanups) == 1
    del w.provider.fail["delete_key"]
    report = w.runner().rotate(w.spec)
    assert report.cleaned == 1 and not w.repo.cleanups
    w.assert_invariants()


@pytest.mark.parametrize("crash_at", ["delete_key:before", "delete_key:after"])
def test_a_crash_mid_cleanup_leaves_no_unpaired_intent(crash_at: str) -> None:
    w = World()
    w.provider.fail["delete_key"] = ProviderUnavailable("503")
    w.runner().rotate(w.spec)
    del w.provider.fail["delete_key"]
    w.provider.crash_at = crash_at
    with pytest.raises(Crash):
        w.runner().cleanup(w.spec)
    w.provider.crash_at = None
    assert w.runner().cleanup(w.spec) == (1, 0)
    w.assert_invariants()                  # the cleanup's intent got its outcome


def test_an_outcome_lost_to_a_database_error_is_closed_by_the_same_process() -> None:
    w = World()
    runner = w.runner()
    record_all = w.repo.record_all

    def flaky(events: Sequence[AuditEvent], lease: Lease) -> None:
        # The database drops after the delete, as its outcome is written.
        if any(event.kind is EventKind.OUTCOME and event.action == "revoke_key"
               for event in events):
            w.repo.record_all = record_all  # type: ignore[method-assign]
            raise ConnectionError("database went away")
        record_all(events, lease)

    w.repo.record_all = flaky  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        runner.rotate(w.spec)
    done = runner.rotate(w.spec).rotation            # the same process, later
    assert done.status is Status.COMPLETED
    w.assert_invariants()                            # the lost outcome was recorded


def test_a_failed_rotation_does_not_block_the_next_one() -> None:
    w = World(never_authenticates=True)
    assert w.runner().rotate(w.spec).rotation.status is Status.ROLLED_BACK
    w.provider.never_authenticates = False
    assert w.runner().rotate(w.spec).rotation.status is Status.COMPLETED


def test_rollback_blocked_by_vault_outage_resumes_later() -> None:
    w = World()
    w.store.fail["write"] = VaultUnavailable("down")
    real_write = w.store.write

    def write_then_outage(*args: object, **kw: object) -> int:
        w.store.fail["read"] = VaultUnavailable("down")  # Vault goes away mid-store
        return real_write(*args, **kw)  # type: ignore[arg-type]

    w.store.write = write_then_outage  # type: ignore[method-assign]
    rot = w.runner().rotate(w.spec, wait=False).rotation
    assert rot.status is Status.RUNNING and rot.step is Step.ROLLBACK
    assert "rollback blocked" in (rot.reason or "")
    del w.store.fail["read"]
    del w.store.fail["write"]
    report = w.runner().rotate(w.spec)
    assert report.resumed and report.rotation.status is Status.ROLLED_BACK
    w.assert_invariants()


def test_a_held_lease_refuses_a_second_runner() -> None:
    w = World()
    assert w.repo.acquire_lease("app", "other", 60, w.clock.now())

    def untouched() -> None:
        """Refused before anything: no rotation, no audit row, no call to Count or Vault."""
        assert w.repo.by_id == {} and w.repo.recorded == []
        assert w.provider.calls == [] and w.store.calls == []
        assert w.repo.leases["app"][0] == "other"      # and the other's lease stands

    with pytest.raises(LeaseHeld):
        w.runner().rotate(w.spec)
    untouched()
    assert w.runner().cleanup(w.spec) is None
    untouched()
    w.clock.sleep(61)  # the other holder died: its lease expires
    assert w.runner().rotate(w.spec).rotation.status is Status.COMPLETED


def test_vault_changed_after_plan_is_not_overwritten() -> None:
    """Check-and-set on the version plan read: a change made since makes the store lose."""
    w = World()
    theirs: list[Secret] = []
    save = w.repo.save_rotation

    def save_then_someone_writes(rot: Rotation, lease: Lease,
                                 ending: AuditEvent | None = None, **more: Any) -> None:
        save(rot, lease, ending, **more)
        if rot.step is Step.STORE and not theirs:   # verified, not stored yet
            theirs.append(w.provider.seed("sa_1"))  # an operator rotated by hand
            w.store.put(REF, theirs[0])

    w.repo.save_rotation = save_then_someone_writes  # type: ignore[method-assign]
    rot = w.runner().rotate(w.spec).rotation
    assert rot.status is Status.ROLLED_BACK
    assert rot.failure is not None and rot.failure.code is FailureCode.CAS_LOST
    assert rot.failure.step is Step.STORE
    assert w.store.current(REF) == theirs[0]                   # their change stands
    assert len(w.store.versions[("secret", "count/app")]) == 2
    assert w.provider.deleted == [rot.new_key_id]              # our new key went
    assert rot.old_key_id in w.account_keys()                  # the old key untouched


def test_old_key_put_back_in_vault_during_grace_is_not_revoked() -> None:
    w = World()
    rot = w.runner().rotate(w.spec, wait=False).rotation
    assert rot.step is Step.GRACE and rot.old_key_id is not None
    w.store.put(REF, w.first)          # someone puts the old key back mid-grace
    w.clock.sleep(30)
    done = w.runner().rotate(w.spec).rotation
    assert done.status is Status.COMPLETED and "queued for cleanup" in (done.reason or "")
    assert w.provider.deleted == [] and w.provider.whoami(w.first).key_id == rot.old_key_id
    why = "Vault serves the old key again; not revoking it"
    assert [(c.key_id, c.reason) for c in w.repo.cleanups.values()] == [(rot.old_key_id, why)]
    assert not [e for e in w.repo.recorded if e.action == AuditAction.REVOKE_KEY]
    (queued,) = [e for e in w.repo.recorded if e.action == AuditAction.CLEANUP_QUEUED]
    assert (queued.result, queued.key_id, queued.detail) == (AuditResult.DEFERRED,
                                                             rot.old_key_id, why)
    # The next pass keeps the key Vault serves, says so, and empties the queue.
    assert w.runner().cleanup(w.spec) == (0, 0)     # kept: neither deleted nor pending
    assert not w.repo.cleanups and w.provider.deleted == []
    (kept,) = [e for e in w.repo.recorded if e.action == AuditAction.CLEANUP_KEY]
    assert (kept.kind, kept.result, kept.key_id) == (EventKind.NOTE, AuditResult.KEPT,
                                                     rot.old_key_id)


# A crash at the nth call of a port method, before or after the call, in a world set up
# so that the first run makes at least n such calls (and the case asserts that it crashed
# there). The third create_key is not reachable: one run drives one rotation, whose create
# step calls create_key at most twice (once more after freeing a slot at the key limit).
def _stale_key(w: World) -> None:
    """At the key limit: create fails, the stale key is deleted, create again."""
    w.provider.seed("sa_1")


def _never_authenticates(w: World) -> None:
    """Verify fails: the rollback lists the keys a third time and deletes the new key."""
    w.provider.never_authenticates = True


def _bad_read_back(w: World) -> None:
    """The read-back fails: the rollback's restore is a second Vault write."""
    w.store.tamper_read_back = True


def _restore_fails_once(w: World) -> None:
    """... and that restore fails once: the retried rollback writes a third time."""
    _bad_read_back(w)
    write, calls = w.store.write, itertools.count(1)

    def write_or_fail(*args: Any, **kw: Any) -> int:
        if next(calls) == 2:
            raise VaultUnavailable("down for one call")
        return write(*args, **kw)

    w.store.write = write_or_fail  # type: ignore[method-assign]


def _queued_and_stale(w: World) -> None:
    """A queued old key (deleted first), then the key limit (a stale key): three deletes."""
    w.provider.fail["delete_key"] = ProviderUnavailable("503")
    assert w.runner("setup").rotate(w.spec).rotation.status is Status.COMPLETED
    del w.provider.fail["delete_key"]
    w.provider.seed("sa_1")


SCENARIOS: dict[str, tuple[Callable[[World], None], Status]] = {
    "plain": (lambda w: None, Status.COMPLETED),
    "stale_key": (_stale_key, Status.COMPLETED),
    "never_authenticates": (_never_authenticates, Status.ROLLED_BACK),
    "bad_read_back": (_bad_read_back, Status.ROLLED_BACK),
    "restore_fails_once": (_restore_fails_once, Status.ROLLED_BACK),
    "queued_and_stale": (_queued_and_stale, Status.COMPLETED),
}
CRASH_CASES = [
    pytest.param(scenario, method, moment, nth, id=f"{method}:{moment}#{nth}-{scenario}")
    for method, moments, scenarios in [
        ("list_keys", ["before"], ["plain", "plain", "never_authenticates"]),
        ("create_key", ["before", "after"], ["plain", "stale_key"]),
        ("whoami", ["before"], ["plain", "plain", "plain"]),
        ("write", ["before", "after"], ["plain", "bad_read_back", "restore_fails_once"]),
        ("delete_key", ["before", "after"], ["plain", "stale_key", "queued_and_stale"]),
    ]
    for moment in moments
    for nth, scenario in enumerate(scenarios, start=1)
]


def _crash_at_call(fake: object, method: str, moment: str, nth: int) -> Callable[[], None]:
    """Make the nth call of ``fake.method`` crash before or after it acts; returns the undo."""
    real = getattr(fake, method)
    calls = itertools.count(1)

    def call(*args: Any, **kw: Any) -> Any:
        n = next(calls)
        if n == nth and moment == "before":
            raise Crash(f"{method}:{moment}#{n}")
        result = real(*args, **kw)
        if n == nth:
            raise Crash(f"{method}:{moment}#{n}")
        return result

    setattr(fake, method, call)
    return lambda: setattr(fake, method, real)


@pytest.mark.parametrize(("scenario", "method", "moment", "nth"), CRASH_CASES)
def test_crash_at_any_call_resumes_to_a_clean_completion(scenario: str, method: str,
                                                         moment: str, nth: int) -> None:
    w = World()
    setup, expected = SCENARIOS[scenario]
    setup(w)
    undo = _crash_at_call(w.store if method == "write" else w.provider, method, moment, nth)
    with pytest.raises(Crash, match=f"^{method}:{moment}#{nth}$"):
        w.runner("h1").rotate(w.spec)
    undo()
    w.clock.sleep(120)     # past grace and the dead holder's lease
    report = w.runner("h2").rotate(w.spec)
    if report.rotation.step is Step.GRACE:
        report = w.runner("h2").rotate(w.spec)
    assert report.rotation.status is expected, report.rotation.reason
    w.assert_invariants()


class IntentWitness:
    """Checks, at the moment of each side-effecting call, that its intent is already recorded.

    The intent must be the one open intent (no outcome with its op id yet), name an action
    of that call, and carry what the call is about: the key to delete, or the fingerprint
    and check-and-set version of the Vault write.
    """

    def __init__(self, w: World) -> None:
        self.repo = w.repo
        self.seen: list[str] = []
        self._wrap(w.provider, "create_key", lambda _account, name, _auth: (
            {AuditAction.CREATE_KEY}, {"detail": f"name {name}"}))
        self._wrap(w.provider, "delete_key", lambda _account, key_id, _auth: (
            {AuditAction.DELETE_KEY, AuditAction.REVOKE_KEY, AuditAction.CLEANUP_KEY},
            {"key_id": key_id}))
        self._wrap(w.store, "write", lambda _ref, secret, cas, _metadata: (
            {AuditAction.VAULT_WRITE, AuditAction.VAULT_RESTORE},
            {"fingerprint": secret.fingerprint, "vault_version": cas}))

    def _wrap(self, fake: object, method: str,
              expect: Callable[..., tuple[set[AuditAction], dict[str, object]]]) -> None:
        real = getattr(fake, method)

        def call(*args: Any) -> Any:
            actions, fields = expect(*args)
            self.check(method, actions, fields)
            return real(*args)

        setattr(fake, method, call)

    def check(self, method: str, actions: set[AuditAction], fields: dict[str, object]) -> None:
        closed = {e.op_id for e in self.repo.recorded if e.kind is EventKind.OUTCOME}
        open_intents = [e for e in self.repo.recorded
                        if e.kind is EventKind.INTENT and e.op_id not in closed]
        assert len(open_intents) == 1, f"{method}: open intents {open_intents}"
        (intent,) = open_intents
        assert intent.action in actions, (method, intent)
        assert {k: getattr(intent, k) for k in fields} == fields, (method, intent)
        assert intent.at is not None and intent.op_id
        self.seen.append(intent.action)


# The side effects each scenario makes, in order.
INTENT_FLOWS = {
    "plain": ["create_key", "vault_write", "revoke_key"],
    "stale_key": ["create_key", "delete_key", "create_key", "vault_write", "revoke_key"],
    "never_authenticates": ["create_key", "delete_key"],
    "bad_read_back": ["create_key", "vault_write", "vault_restore", "delete_key"],
    "queued_and_stale": ["create_key", "vault_write", "revoke_key",      # its setup
                         "cleanup_key", "create_key", "delete_key", "create_key",
                         "vault_write", "revoke_key"],
}


@pytest.mark.parametrize(("scenario", "effects"), INTENT_FLOWS.items(), ids=INTENT_FLOWS)
def test_every_side_effect_finds_its_intent_recorded_before_the_call(
        scenario: str, effects: list[str]) -> None:
    w = World()
    witness = IntentWitness(w)
    setup, expected = SCENARIOS[scenario]
    setup(w)
    assert w.runner().rotate(w.spec).rotation.status is expected
    assert witness.seen == effects
    w.assert_invariants()
