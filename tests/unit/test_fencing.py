"""Fencing: a runner that lost its lease changes nothing once another took the target over.

Two runners (two replicas) share one state store, one provider and one Vault. The first
is "frozen" by a hook inside one of its calls: while it is stuck there the clock passes
its lease, and the second runner takes the target over and runs. When the first resumes,
every write it tries is refused (``LeaseLost``), so the rotation keeps one ending and the
invariant checker finds nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

import pytest

from rotator.app.verify import check_targets
from rotator.core.errors import LeaseLost
from rotator.core.model import AuditEvent, Status, Step
from rotator.core.ports import (
    Deletion,
    Identity,
    KeyListing,
    Lease,
    NewKey,
    SecretRef,
    VaultSecret,
)
from rotator.core.secret import Secret
from rotator.core.target import TargetSpec
from rotator.core.vocabulary import AuditAction, EventKind, VaultMetadataKey, vault_metadata
from rotator.engine.runner import Runner
from tests.fakes import FakeClock, FakeProvider, FakeStore, MemoryRepository

REF = SecretRef("secret", "count/app", "api_key")
TTL = 30.0
DEADLINE = 12.0      # the longest a call may take: a take-over waits it out


class Frozen:
    """Runs ``hook`` once, at the ``nth`` call named ``call``, before or after the call."""

    def __init__(self, call: str, nth: int = 1, *, after: bool = False) -> None:
        self.call, self.left, self.after = call, nth, after
        self.hook: Callable[[], None] = lambda: None

    def at(self, call: str, run: Callable[[], object]) -> object:
        if call == self.call:
            self.left -= 1
        hit = call == self.call and self.left == 0
        if hit and not self.after:
            self.hook()
        value = run()
        if hit and self.after:
            self.hook()
        return value


class FreezingProvider:
    def __init__(self, inner: FakeProvider, frozen: Frozen) -> None:
        self.inner, self.frozen = inner, frozen

    def list_keys(self, account: str, auth: Secret) -> KeyListing:
        return self.inner.list_keys(account, auth)

    def create_key(self, account: str, name: str, auth: Secret) -> NewKey:
        return self.frozen.at("create_key",  # type: ignore[return-value]
                              lambda: self.inner.create_key(account, name, auth))

    def delete_key(self, account: str, key_id: str, auth: Secret) -> Deletion:
        return self.frozen.at("delete_key",  # type: ignore[return-value]
                              lambda: self.inner.delete_key(account, key_id, auth))

    def whoami(self, key: Secret) -> Identity:
        return self.frozen.at("whoami", lambda: self.inner.whoami(key))  # type: ignore[return-value]


class FreezingStore:
    def __init__(self, inner: FakeStore, frozen: Frozen) -> None:
        self.inner, self.frozen = inner, frozen

    def read_current(self, ref: SecretRef) -> VaultSecret:
        return self.inner.read_current(ref)

    def read_version(self, ref: SecretRef, version: int) -> VaultSecret:
        return self.inner.read_version(ref, version)

    def write(self, ref: SecretRef, secret: Secret, cas: int,
              custom_metadata: Mapping[str, str]) -> int:
        return self.frozen.at("vault_write",  # type: ignore[return-value]
                              lambda: self.inner.write(ref, secret, cas, custom_metadata))


class Replicas:
    def __init__(self, frozen: Frozen, *, propagation: float = 0.0, key_limit: int = 2) -> None:
        self.clock = FakeClock()
        self.provider = FakeProvider(self.clock, propagation=propagation, key_limit=key_limit)
        self.store = FakeStore()
        self.repo = MemoryRepository(self.clock.now)
        admin = self.provider.seed("sa_admin")
        self.first_key = self.provider.seed("sa_1")
        self.store.put(REF, self.first_key)
        self.spec = TargetSpec(name="app", provider="count", service_account="sa_1", ref=REF,
                               grace_seconds=5, probe_timeout=20, probe_interval=1,
                               management_key=admin)
        self.frozen = frozen
        self.zombie = Runner(providers={"count": FreezingProvider(self.provider, frozen)},
                             store=FreezingStore(self.store, frozen), repo=self.repo,  # type: ignore[arg-type]
                             clock=self.clock, holder="zombie", lease_ttl=TTL,
                             call_deadline=DEADLINE)
        self.survivor = Runner(providers={"count": self.provider}, store=self.store,
                               repo=self.repo, clock=self.clock, holder="survivor",
                               lease_ttl=TTL, call_deadline=DEADLINE)
        self.took_over_at: datetime | None = None
        self.rows_at_take_over = 0
        self.effects_at_take_over = 0

    def take_over_when_frozen(self) -> None:
        def freeze() -> None:
            self.clock.sleep(TTL + 1)              # the zombie's lease lapses
            self.took_over_at = self.clock.now()
            done = self.survivor.rotate(self.spec).rotation
            assert done.status is Status.COMPLETED
            self.rows_at_take_over = len(self.repo.recorded)
            self.effects_at_take_over = self.side_effects()
        self.frozen.hook = freeze

    def side_effects(self) -> int:
        """Calls that change something: key creations and deletions, Vault writes."""
        changes = [c for c in self.provider.calls if c in ("create_key", "delete_key")]
        return len(changes) + self.store.writes

    def survivor_started_at(self) -> datetime:
        """When the survivor wrote its first row: when it began to act on the target."""
        zombie = self.repo.generations[0]
        first = next(e for e, g in zip(self.repo.recorded, self.repo.generations, strict=True)
                     if g > zombie)
        assert first.at is not None
        return first.at

    def assert_one_clean_ending(self) -> None:
        (rot,) = self.repo.by_id.values()
        assert rot.status is Status.COMPLETED
        endings = [e for e in self.repo.recorded if e.kind is EventKind.NOTE
                   and e.action in (AuditAction.COMPLETED, AuditAction.ROLLED_BACK,
                                    AuditAction.FAILED)]
        assert [e.action for e in endings] == [AuditAction.COMPLETED]
        assert len(self.repo.recorded) == self.rows_at_take_over   # nothing after it
        assert self.side_effects() == self.effects_at_take_over
        assert check_targets([self.spec], {"count": self.provider}, self.store,
                             self.repo) == []
        served = self.provider.whoami(self.store.current(REF))
        assert {k.key_id for k in self.provider.keys.values() if k.account == "sa_1"} == {
            served.key_id}


def test_a_runner_frozen_while_probing_changes_nothing_after_the_take_over() -> None:
    # The zombie: frozen in verify; the survivor deletes its key as unusable and
    # completes; the zombie's probes then fail and it would have rolled the rotation back.
    r = Replicas(Frozen("whoami", nth=2), propagation=3)
    r.take_over_when_frozen()
    with pytest.raises(LeaseLost):
        r.zombie.rotate(r.spec)
    r.assert_one_clean_ending()


@pytest.mark.parametrize("action", [AuditAction.CREATE_KEY, AuditAction.VAULT_WRITE,
                                    AuditAction.REVOKE_KEY])
def test_a_runner_frozen_before_a_side_effect_never_makes_it(action: AuditAction) -> None:
    # Frozen after the intent row, before the call: on waking it confirms its lease, finds
    # it gone and makes no call.
    r = Replicas(Frozen("never"))
    r.take_over_when_frozen()
    freeze, record_all = r.frozen.hook, r.repo.record_all
    seen: list[int] = []     # the zombie's calls so far, when it froze

    def record_then_freeze(events: Sequence[AuditEvent], lease: Lease) -> None:
        record_all(events, lease)
        if any((lease.holder, event.kind, event.action) == ("zombie", EventKind.INTENT, action)
               for event in events):
            seen.append(len(r.provider.calls))
            freeze()

    r.repo.record_all = record_then_freeze  # type: ignore[method-assign]
    with pytest.raises(LeaseLost):
        r.zombie.rotate(r.spec, grace=0)
    assert seen, f"the zombie never reached {action}"
    r.assert_one_clean_ending()          # no call of the zombie's after the take-over


def test_a_take_over_waits_out_a_call_the_frozen_holder_left_undecided() -> None:
    # Frozen inside its Vault write (the intent is open): the survivor must not act before
    # the zombie's call has surely ended.
    r = Replicas(Frozen("vault_write"))
    r.take_over_when_frozen()
    with pytest.raises(LeaseLost):
        r.zombie.rotate(r.spec)
    assert r.took_over_at is not None
    lapsed = r.took_over_at.timestamp() - 1          # the zombie's lease ran out then
    assert r.survivor_started_at().timestamp() >= lapsed + DEADLINE
    r.assert_one_clean_ending()


def test_a_take_over_with_nothing_undecided_does_not_wait() -> None:
    r = Replicas(Frozen("whoami", nth=2), propagation=3)
    r.take_over_when_frozen()
    with pytest.raises(LeaseLost):
        r.zombie.rotate(r.spec)
    assert r.survivor_started_at() == r.took_over_at


def test_a_late_write_of_an_earlier_attempt_is_replaced_by_the_verified_key() -> None:
    # A holder's Vault write of its (unverified by us, then deleted) key lands after the
    # take-over deleted that key: check-and-set on what is there puts the verified key over
    # it, rather than a rollback leaving a dead key served.
    r = Replicas(Frozen("never"), key_limit=3)
    first = r.zombie.rotate(r.spec, wait=False)          # a normal first rotation
    assert first.rotation.status is Status.COMPLETED or first.rotation.step is Step.GRACE
    r.clock.sleep(10)
    r.survivor.rotate(r.spec)                            # finish it
    rot_id = "rot_late"
    create = r.provider.create_key

    def create_then_land_the_late_write(account: str, name: str, auth: Secret) -> NewKey:
        new = create(account, name, auth)
        running = r.repo.running_rotation("app")
        assert running is not None
        if not r.provider.names().count(name) > 1 and running.old_version is not None:
            dead = r.provider.create_key(account, name, auth)      # the earlier attempt's
            r.provider.delete_key(account, dead.key_id, auth)      # ...deleted as unusable
            r.store.write(REF, dead.secret, running.old_version, vault_metadata(
                key_id=dead.key_id, rotation_id=running.rotation_id, created_at="x",
                fingerprint=dead.secret.fingerprint))              # ...landing late
        return new

    r.provider.create_key = create_then_land_the_late_write  # type: ignore[method-assign]
    done = r.survivor.rotate(r.spec).rotation
    assert done.status is Status.COMPLETED, done.reason
    served = r.provider.whoami(r.store.current(REF))
    assert served.key_id == done.new_key_id
    meta = r.store.metadata[("secret", "count/app")]
    assert meta[VaultMetadataKey.ROTATION_ID] == done.rotation_id != rot_id
    replaced = [e for e in r.repo.recorded if e.action == AuditAction.VAULT_WRITE
                and e.kind is EventKind.INTENT and "earlier attempt" in (e.detail or "")]
    assert len(replaced) == 1
    assert check_targets([r.spec], {"count": r.provider}, r.store, r.repo) == []
