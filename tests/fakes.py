"""In-memory fakes of the ports, satisfying the Protocols structurally (no inheritance).

``Crash`` is a BaseException, so it passes through every ``except RotatorError`` the way
a SIGKILL passes through everything: it lets a unit test stop the runner at any call,
before or after the fake performed the side effect.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from rotator.core.errors import (
    CasConflict,
    KeyLimitReached,
    LeaseHeld,
    LeaseLost,
    RotationFinished,
    SecretNotFound,
    Unauthorized,
)
from rotator.core.model import (
    AuditEvent,
    KeyRecord,
    Rotation,
    ScheduleFacts,
    Status,
    StoredEvent,
)
from rotator.core.ports import (
    Deletion,
    Identity,
    KeyListing,
    Lease,
    NewKey,
    PendingCleanup,
    SecretRef,
    VaultSecret,
)
from rotator.core.secret import Secret
from rotator.core.vocabulary import EventKind

RELEASED = datetime(1970, 1, 1, tzinfo=UTC)   # as SqlRepository marks a released lease
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class Crash(BaseException):
    """The process dies here."""


class FakeClock:
    def __init__(self, start: datetime = T0) -> None:
        self.current = start

    def now(self) -> datetime:
        return self.current

    def sleep(self, seconds: float) -> None:
        self.current += timedelta(seconds=max(seconds, 0))


@dataclass
class _Key:
    key_id: str
    account: str
    name: str
    secret: str
    created_at: datetime
    live_at: datetime
    last_used_at: datetime | None = None   # stamped by every call it authenticates


@dataclass
class FakeProvider:
    clock: FakeClock
    key_limit: int = 2
    propagation: float = 0.0
    never_authenticates: bool = False
    # A deleted key keeps authenticating for this long (math.inf: the provider never
    # revokes it), like the emulator's ``revoke_delay``.
    revoke_lag: float = 0.0
    crash_at: str | None = None          # "create_key:before" / "delete_key:after" / ...
    fail: dict[str, BaseException] = field(default_factory=dict)  # call name -> exception
    keys: dict[str, _Key] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    lingering: dict[str, tuple[_Key, datetime]] = field(default_factory=dict)  # deleted, at
    calls: list[str] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def seed(self, account: str) -> Secret:
        return Secret(self._make(account, "seed", live=True).secret)

    def _make(self, account: str, name: str, live: bool = False) -> _Key:
        now = self.clock.now()
        key = _Key(f"key_{next(self._ids):04d}", account, name, "cnt_" + secrets.token_hex(20),
                   now, now if live else now + timedelta(seconds=self.propagation))
        self.keys[key.key_id] = key
        return key

    def _enter(self, call: str) -> None:
        self.calls.append(call)
        if self.crash_at == f"{call}:before":
            raise Crash(call)
        if call in self.fail:
            raise self.fail[call]

    def _leave(self, call: str) -> None:
        if self.crash_at == f"{call}:after":
            raise Crash(call)

    def _authenticate(self, bearer: Secret) -> _Key:
        for key, deleted_at in self.lingering.values():
            if (key.secret == bearer.reveal()
                    and (self.clock.now() - deleted_at).total_seconds() < self.revoke_lag):
                return key
        for key in self.keys.values():
            if key.secret == bearer.reveal() and self.clock.now() >= key.live_at:
                if self.never_authenticates and key.name != "seed":
                    break
                key.last_used_at = self.clock.now()
                return key
        raise Unauthorized("401")

    def list_keys(self, account: str, auth: Secret) -> KeyListing:
        self._enter("list_keys")
        self._authenticate(auth)
        return KeyListing([KeyRecord(k.key_id, k.name, k.created_at, k.last_used_at)
                           for k in self.keys.values() if k.account == account], "req_l")

    def create_key(self, account: str, name: str, auth: Secret) -> NewKey:
        self._enter("create_key")
        self._authenticate(auth)
        if sum(k.account == account for k in self.keys.values()) >= self.key_limit:
            raise KeyLimitReached("key_limit_reached", service_account=account)
        key = self._make(account, name)
        self._leave("create_key")
        return NewKey(key.key_id, name, Secret(key.secret), key.created_at, "req_c")

    def delete_key(self, account: str, key_id: str, auth: Secret) -> Deletion:
        self._enter("delete_key")
        self._authenticate(auth)
        key = self.keys.pop(key_id, None)
        if key is None:
            return Deletion(key_id, True, "req_d")
        self.deleted.append(key_id)
        self.lingering[key_id] = (key, self.clock.now())
        self._leave("delete_key")
        return Deletion(key_id, False, "req_d")

    def whoami(self, key: Secret) -> Identity:
        self._enter("whoami")
        found = self._authenticate(key)
        return Identity(found.account, found.key_id, "req_w")

    def key_of(self, secret: Secret) -> str | None:
        return next((k.key_id for k in self.keys.values() if k.secret == secret.reveal()), None)

    def names(self) -> list[str]:
        return sorted(k.name for k in self.keys.values())

    def __repr__(self) -> str:
        return f"FakeProvider(keys={list(self.keys)})"


@dataclass
class FakeStore:
    versions: dict[tuple[str, str], list[dict[str, str]]] = field(default_factory=dict)
    metadata: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    crash_at: str | None = None
    fail: dict[str, BaseException] = field(default_factory=dict)
    tamper_read_back: bool = False
    writes: int = 0
    calls: list[str] = field(default_factory=list)

    def put(self, ref: SecretRef, secret: Secret) -> None:
        self.versions.setdefault((ref.mount, ref.path), []).append({ref.field: secret.reveal()})

    def _enter(self, call: str) -> None:
        self.calls.append(call)
        if self.crash_at == f"{call}:before":
            raise Crash(call)
        if call in self.fail:
            raise self.fail[call]

    def read_current(self, ref: SecretRef) -> VaultSecret:
        self._enter("read")
        versions = self.versions.get((ref.mount, ref.path))
        if not versions:
            raise SecretNotFound("no secret", path=ref.path)
        value = versions[-1][ref.field]
        if self.tamper_read_back and self.writes:
            self.tamper_read_back = False  # one bad read, like a flaky replica
            value = "tampered-" + value
        return VaultSecret(len(versions), Secret(value),
                           dict(self.metadata.get((ref.mount, ref.path), {})))

    def read_version(self, ref: SecretRef, version: int) -> VaultSecret:
        self.calls.append("read_version")
        versions = self.versions.get((ref.mount, ref.path)) or []
        if not 1 <= version <= len(versions):
            raise SecretNotFound("no such version", version=version)
        return VaultSecret(version, Secret(versions[version - 1][ref.field]))

    def write(self, ref: SecretRef, secret: Secret, cas: int,
              custom_metadata: Mapping[str, str]) -> int:
        self._enter("write")
        versions = self.versions.setdefault((ref.mount, ref.path), [])
        if cas != len(versions):
            raise CasConflict("check-and-set", path=ref.path)
        versions.append({**(versions[-1] if versions else {}), ref.field: secret.reveal()})
        self.metadata[(ref.mount, ref.path)] = dict(custom_metadata)
        self.writes += 1
        if self.crash_at == "write:after":
            raise Crash("write")
        return len(versions)

    def current(self, ref: SecretRef) -> Secret:
        return Secret(self.versions[(ref.mount, ref.path)][-1][ref.field])


class MemoryRepository:
    """The ``RotationRepository`` and ``RotationReader`` ports in memory.

    ``by_id`` and ``recorded`` are what SQL's ``rotations`` and ``rotation_events`` hold.
    """

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._clock = clock    # stamps a row recorded without ``at``, as SQL's default does
        self.by_id: dict[str, Rotation] = {}
        self.recorded: list[AuditEvent] = []
        self.generations: list[int] = []      # the lease generation of each recorded row
        # target -> (holder, expires at, generation); a released lease expires at RELEASED
        self.leases: dict[str, tuple[str, datetime, int]] = {}
        self.cleanups: dict[tuple[str, str], PendingCleanup] = {}

    def _fence(self, target: str, lease: Lease) -> None:
        assert target == lease.target, (target, lease.target)
        held = self.leases.get(target)
        if held is None or (held[0], held[2]) != (lease.holder, lease.generation):
            raise LeaseLost("taken over", target=target, generation=lease.generation)

    def insert_rotation(self, rotation: Rotation, lease: Lease) -> None:
        self._fence(rotation.target, lease)
        if self.running_rotation(rotation.target):
            raise LeaseHeld("running", target=rotation.target)
        self.by_id[rotation.rotation_id] = rotation

    def save_rotation(self, rotation: Rotation, lease: Lease,
                      ending: AuditEvent | None = None, *,
                      notes: Sequence[AuditEvent] = (),
                      renew_until: datetime | None = None) -> None:
        self._fence(rotation.target, lease)
        stored = self.by_id.get(rotation.rotation_id)
        if stored is None:
            raise LookupError(rotation.rotation_id)
        if stored.is_terminal:
            raise RotationFinished("a finished rotation never changes",
                                   rotation_id=rotation.rotation_id)
        self.by_id[rotation.rotation_id] = rotation
        self.record_all([*notes, *([] if ending is None else [ending])], lease)
        if renew_until is not None:
            self.leases[lease.target] = (lease.holder, renew_until, lease.generation)

    def get_rotation(self, rotation_id: str) -> Rotation | None:
        return self.by_id.get(rotation_id)

    def running_rotation(self, target: str) -> Rotation | None:
        return next((r for r in self.by_id.values()
                     if r.target == target and r.status is Status.RUNNING), None)

    def record(self, event: AuditEvent, lease: Lease) -> None:
        self.record_all([event], lease)

    def record_all(self, events: Sequence[AuditEvent], lease: Lease) -> None:
        for event in events:
            self._fence(event.target, lease)
        for event in events:
            self.recorded.append(event if event.at is not None
                                 else replace(event, at=self._clock()))
            self.generations.append(lease.generation)

    def open_intents(self, rotation_id: str) -> list[AuditEvent]:
        closed = {e.op_id for e in self.recorded if e.kind is EventKind.OUTCOME}
        return [e for e in self.recorded if e.rotation_id == rotation_id
                and e.kind is EventKind.INTENT and e.op_id not in closed]

    def has_open_intent(self, target: str) -> bool:
        closed = {e.op_id for e in self.recorded if e.kind is EventKind.OUTCOME}
        return any(e.target == target and e.kind is EventKind.INTENT and e.op_id not in closed
                   for e in self.recorded)

    def protected_key_ids(self, service_account: str, except_rotation: str) -> set[str]:
        return {k for r in self.by_id.values()
                if r.service_account == service_account and r.status is Status.RUNNING
                and r.rotation_id != except_rotation
                for k in (r.old_key_id, r.new_key_id) if k}

    def acquire_lease(self, target: str, holder: str, ttl_seconds: float,
                      now: datetime) -> Lease | None:
        held = self.leases.get(target)
        if held and held[0] != holder and held[1] >= now:
            return None
        generation = (held[2] if held else 0) + 1
        self.leases[target] = (holder, now + timedelta(seconds=ttl_seconds), generation)
        previous = (None if held is None or held[0] == holder or held[1] <= RELEASED
                    else held[1])
        return Lease(target, holder, generation, previous)

    def renew_lease(self, target: str, holder: str, ttl_seconds: float, now: datetime) -> bool:
        held = self.leases.get(target)
        if not held or held[0] != holder or held[1] <= RELEASED:
            return False
        self.leases[target] = (holder, now + timedelta(seconds=ttl_seconds), held[2])
        return True

    def confirm_lease(self, lease: Lease, ttl_seconds: float, now: datetime) -> bool:
        held = self.leases.get(lease.target)
        if not held or (held[0], held[2]) != (lease.holder, lease.generation):
            return False
        self.leases[lease.target] = (lease.holder, now + timedelta(seconds=ttl_seconds),
                                     lease.generation)
        return True

    def release_lease(self, target: str, holder: str) -> None:
        held = self.leases.get(target)
        if held is not None and held[0] == holder:
            self.leases[target] = (holder, RELEASED, held[2])

    def add_cleanup(self, item: PendingCleanup, now: datetime, lease: Lease) -> None:
        self._fence(item.target, lease)
        self.cleanups.setdefault((item.target, item.key_id), item)

    def pending_cleanups(self, target: str) -> list[PendingCleanup]:
        return [c for c in self.cleanups.values() if c.target == target]

    def resolve_cleanup(self, target: str, key_id: str, now: datetime, lease: Lease) -> None:
        self._fence(target, lease)
        self.cleanups.pop((target, key_id), None)

    # --- the RotationReader port ---------------------------------------------------------

    def events(self, target: str | None = None, since: datetime | None = None,
               limit: int | None = None, *, until: datetime | None = None,
               rotation_id: str | None = None,
               triggers: Collection[str] = ()) -> list[StoredEvent]:
        def started_by(event: AuditEvent) -> str | None:
            rot = self.by_id.get(event.rotation_id)
            return None if rot is None else rot.trigger

        rows = [_stored(i, e, g)
                for i, (e, g) in enumerate(zip(self.recorded, self.generations, strict=True),
                                           start=1)
                if (target is None or e.target == target)
                and (since is None or (e.at is not None and e.at >= since))
                and (until is None or (e.at is not None and e.at <= until))
                and (rotation_id is None or e.rotation_id == rotation_id)
                and (not triggers or started_by(e) in triggers)]
        if limit is None:
            return rows
        if limit < 0:
            raise ValueError(f"limit must be >= 0, not {limit}")
        return rows[len(rows) - limit:] if limit else []

    def rotations(self, target: str | None = None,
                  status: Status | None = None) -> list[Rotation]:
        found = [r for r in self.by_id.values()
                 if (target is None or r.target == target)
                 and (status is None or r.status is status)]
        return sorted(found, key=lambda r: (r.started_at, r.rotation_id))

    def all_running(self) -> list[Rotation]:
        return self.rotations(status=Status.RUNNING)

    def latest_rotations(self) -> dict[str, Rotation]:
        latest: dict[str, Rotation] = {}
        for rot in self.rotations():      # oldest first: a later start replaces an earlier
            latest[rot.target] = rot
        return dict(sorted(latest.items()))

    def last_completed(self, target: str) -> Rotation | None:
        done = self.rotations(target, Status.COMPLETED)
        far_past = datetime.min.replace(tzinfo=UTC)
        return max(done, key=lambda r: (r.finished_at or far_past, r.started_at), default=None)

    def schedule_facts(self, target: str) -> ScheduleFacts:
        done = self.last_completed(target)
        failed = [r for r in self.rotations(target)
                  if r.status in (Status.FAILED, Status.ROLLED_BACK)
                  and (done is None or r.started_at > done.started_at)]
        ends = [r.finished_at for r in failed if r.finished_at is not None]
        return ScheduleFacts(done, len(failed), max(ends, default=None))

    def all_schedule_facts(self, targets: Collection[str] | None = None,
                           ) -> dict[str, ScheduleFacts]:
        return {target: self.schedule_facts(target)
                for target in {r.target for r in self.rotations()}
                if targets is None or target in targets}

    def all_pending_cleanups(self) -> list[PendingCleanup]:
        return list(self.cleanups.values())


def _stored(row_id: int, event: AuditEvent, generation: int) -> StoredEvent:
    assert event.at is not None, "the audit trail stamps every row it records"
    return StoredEvent(
        id=row_id, at=event.at, rotation_id=event.rotation_id, target=event.target,
        step=event.step, kind=event.kind, action=event.action, result=event.result,
        key_id=event.key_id, fingerprint=event.fingerprint, vault_version=event.vault_version,
        request_id=event.request_id, op_id=event.op_id, detail=event.detail,
        lease_generation=generation)
