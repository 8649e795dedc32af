"""What the runner and the steps do besides the happy flow: overrides, waits, the lease,
shutdown, retries, what the observer hears, and the new key's name, probes and memory."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from rotator.core.errors import LeaseHeld, ProviderUnavailable, RateLimited, VaultUnavailable
from rotator.core.model import Rotation, Status, Step
from rotator.core.secret import Secret
from rotator.engine import runner as runner_module
from rotator.engine.runner import Runner
from tests.fakes import RELEASED, Crash
from tests.unit.test_runner import REF, World


def runner(w: World, **kw: Any) -> Runner:
    args: dict[str, Any] = {"lease_ttl": 60, "rollback_retry_delay": 1, **kw}
    return Runner(providers={"count": w.provider}, store=w.store, repo=w.repo, clock=w.clock,
                  holder=args.pop("holder", "h1"), **args)


def spy(fake: object, method: str, pick: Callable[..., Any]) -> list[Any]:
    """``pick(*args)`` of every call of ``fake.method`` from now on, which still runs."""
    seen: list[Any] = []
    real = getattr(fake, method)

    def call(*args: Any) -> Any:
        seen.append(pick(*args))
        return real(*args)

    setattr(fake, method, call)
    return seen


def seconds_since(w: World, start: datetime) -> float:
    return (w.clock.now() - start).total_seconds()


# -- grace ------------------------------------------------------------------------------
def test_rotate_grace_overrides_the_targets_grace() -> None:
    w = World()
    rot = w.runner().rotate(w.spec, grace=0, wait=False).rotation
    assert rot.status is Status.COMPLETED and rot.grace_seconds == 0   # no wait at all
    started = next(e for e in w.repo.recorded if e.action == "started")
    assert started.detail == "manual rotation by cli; grace 0s"


def test_rotate_keeps_the_operators_reason_stripped_in_the_row_and_the_trail() -> None:
    w = World()
    rot = w.runner().rotate(w.spec, grace=0, reason="  SEC-42: key in a CI log ").rotation
    assert rot.manual_reason == "SEC-42: key in a CI log"
    assert w.repo.by_id[rot.rotation_id].manual_reason == "SEC-42: key in a CI log"
    started = next(e for e in w.repo.recorded if e.action == "started")
    assert started.detail == "manual rotation by cli; grace 0s; reason: SEC-42: key in a CI log"


def test_rotate_if_grace_overrides_the_targets_grace() -> None:
    w = World()
    report = w.runner().rotate_if(w.spec, lambda: True, trigger="schedule", actor="d1",
                                  grace=5, wait=False)
    assert report is not None
    rot = report.rotation
    assert rot.step is Step.GRACE and rot.grace_seconds == 5
    assert rot.grace_ends_at is not None
    assert (rot.grace_ends_at - rot.started_at).total_seconds() == 5


def test_grace_wait_renews_the_lease_and_beats_the_heart_every_third_of_the_ttl() -> None:
    w = World()
    w.spec = dataclasses.replace(w.spec, grace_seconds=100)
    beats: list[datetime] = []
    confirms = spy(w.repo, "confirm_lease", lambda lease, ttl, now: now)
    start = w.clock.now()
    rot = runner(w, heartbeat=lambda: beats.append(w.clock.now())).rotate(w.spec).rotation
    assert rot.status is Status.COMPLETED
    assert [(b - start).total_seconds() for b in beats] == [20, 40, 60, 80, 100]
    times = [(c - start).total_seconds() for c in confirms]
    assert all(b - a <= 20 for a, b in itertools.pairwise(times))
    assert {20, 40, 60, 80, 100} <= set(times)


@pytest.mark.parametrize(("ttl", "grace", "beats"), [
    (60, 20.5, [20, 20.5]),            # the last slice is what is left, however short
    (1.5, 2, [0.5, 1, 1.5, 2]),        # a third of a short ttl too
    (0.03, 0.1, [0.05, 0.1]),          # but never less than 50 ms: no busy polling
])
def test_grace_wait_slices_end_exactly_at_the_end_of_grace(ttl: float, grace: float,
                                                           beats: list[float]) -> None:
    w = World()
    w.spec = dataclasses.replace(w.spec, grace_seconds=grace)
    seen: list[float] = []
    now, reads = w.clock.now, itertools.count()

    def bounded_now() -> datetime:     # a wait that stops sleeping spins on the clock
        assert next(reads) < 1000, "the grace wait spins without sleeping"
        return now()

    w.clock.now = bounded_now  # type: ignore[method-assign]
    start = w.clock.now()
    r = runner(w, lease_ttl=ttl, heartbeat=lambda: seen.append(seconds_since(w, start)))
    assert r.rotate(w.spec).rotation.status is Status.COMPLETED
    assert seen == pytest.approx(beats)


# -- the lease --------------------------------------------------------------------------
def test_a_run_waits_for_a_held_lease_until_it_lapses() -> None:
    w = World()
    assert w.repo.acquire_lease("app", "other", 60, w.clock.now())
    start = w.clock.now()
    rot = w.runner().rotate(w.spec, grace=0, lease_wait=120).rotation
    assert rot.status is Status.COMPLETED
    assert 60 <= (rot.started_at - start).total_seconds() <= 60.5


def test_a_held_lease_is_polled_every_quarter_of_a_short_ttl() -> None:
    w = World()
    assert w.repo.acquire_lease("app", "other", 1, w.clock.now())
    start = w.clock.now()
    polls = spy(w.repo, "acquire_lease", lambda *_: seconds_since(w, start))
    runner(w, lease_ttl=1).rotate(w.spec, wait=False, lease_wait=5)
    assert polls == [0, 0.25, 0.5, 0.75, 1, 1.25]     # the other's lease ran to 1 s


def test_a_run_gives_up_on_a_held_lease_after_lease_wait() -> None:
    w = World()
    assert w.repo.acquire_lease("app", "other", 60, w.clock.now())
    start = w.clock.now()
    with pytest.raises(LeaseHeld, match="lapses within 60s"):
        w.runner().rotate(w.spec, lease_wait=10)
    assert 10 <= seconds_since(w, start) <= 10.5
    assert w.repo.by_id == {} and w.repo.leases["app"][0] == "other"


def test_without_lease_wait_a_held_lease_is_refused_at_once() -> None:
    w = World()
    assert w.repo.acquire_lease("app", "other", 60, w.clock.now())
    start = w.clock.now()
    with pytest.raises(LeaseHeld) as held:
        w.runner().rotate(w.spec)
    assert str(held.value) == ("another process holds this target's lease; if it died, the "
                               "lease lapses within 60s (retry, or pass --wait-lease) "
                               "(target=app)")
    with pytest.raises(LeaseHeld):
        w.runner().rotate_if(w.spec, lambda: True, trigger="schedule", actor="d1")
    assert w.runner().cleanup(w.spec) is None
    assert seconds_since(w, start) == 0


def test_a_run_and_a_cleanup_release_the_lease() -> None:
    w = World()
    w.runner().rotate(w.spec, wait=False)
    assert w.repo.leases["app"][1] == RELEASED
    assert w.runner(holder="h2").cleanup(w.spec) == (0, 0)      # taken at once
    assert w.repo.leases["app"][:2] == ("h2", RELEASED)
    report = w.runner(holder="h3").rotate(w.spec)               # and again
    assert report.rotation.status is Status.COMPLETED


# -- shutdown, retries, the report ----------------------------------------------------
def test_a_stopping_runner_parks_before_anything_is_created() -> None:
    w = World()
    rot = runner(w, stopping=lambda: True).rotate(w.spec).rotation
    assert rot.status is Status.RUNNING and rot.step is Step.PLAN
    assert w.provider.calls == []


def test_a_stopping_runner_does_not_park_while_the_new_secret_is_only_in_memory() -> None:
    w = World()
    r = runner(w, stopping=lambda: "create_key" in w.provider.calls)
    rot = r.rotate(w.spec, wait=False).rotation
    assert rot.status is Status.RUNNING and rot.step is Step.GRACE   # stored, then parked
    assert w.vault_key() == rot.new_key_id and rot.new_version == 2


def rollback_blocked_by_vault(w: World) -> list[float]:
    """Vault fails the write, then every read: the rollback cannot learn what it serves."""
    w.store.fail["write"] = VaultUnavailable("down")
    reads: list[float] = []
    read = w.store.read_current
    start = w.clock.now()

    def read_current(ref: Any) -> Any:
        if w.store.writes or "write" in w.store.calls:
            reads.append(seconds_since(w, start))
            raise VaultUnavailable("down")
        return read(ref)

    w.store.read_current = read_current  # type: ignore[method-assign]
    return reads


def test_a_blocked_rollback_is_tried_three_times_with_a_growing_delay() -> None:
    w = World()
    reads = rollback_blocked_by_vault(w)
    rot = runner(w, rollback_retry_delay=2).rotate(w.spec).rotation
    assert rot.status is Status.RUNNING and rot.step is Step.ROLLBACK
    assert [t - reads[0] for t in reads] == [0, 2, 6]


def test_a_runner_built_with_its_defaults() -> None:
    # A lease of 5 minutes, no call deadline to wait out, a blocked rollback retried after
    # 5 s then 10 s; and rotate_if, like rotate, waits the grace window out.
    w = World()
    ttls = spy(w.repo, "acquire_lease", lambda target, holder, ttl, now: ttl)
    reads = rollback_blocked_by_vault(w)
    r = Runner(providers={"count": w.provider}, store=w.store, repo=w.repo, clock=w.clock,
               holder="h1")
    assert r.rotate(w.spec).rotation.step is Step.ROLLBACK
    assert ttls == [300] and [t - reads[0] for t in reads] == [0, 5, 15]
    w = World()
    report = Runner(providers={"count": w.provider}, store=w.store, repo=w.repo,
                    clock=w.clock, holder="h1").rotate_if(w.spec, lambda: True,
                                                          trigger="schedule", actor="d1")
    assert report is not None and report.rotation.status is Status.COMPLETED


def test_a_stopping_runner_leaves_a_blocked_rollback_after_one_try() -> None:
    w = World()
    reads = rollback_blocked_by_vault(w)
    r = runner(w, stopping=lambda: "write" in w.store.calls)
    rot = r.rotate(w.spec).rotation
    assert rot.step is Step.ROLLBACK and len(reads) == 1


class Observer:
    def __init__(self) -> None:
        self.heard: list[tuple[Any, ...]] = []

    def rotation_started(self, rotation: Rotation) -> None:
        self.heard.append(("started", rotation.rotation_id))

    def step_done(self, rotation: Rotation, action: str, seconds: float) -> None:
        assert 0 <= seconds < 5
        self.heard.append(("step", rotation.rotation_id, rotation.step.value, action))

    def rotation_finished(self, rotation: Rotation, last_step: str) -> None:
        self.heard.append(("finished", rotation.rotation_id, rotation.status.value, last_step))


def test_the_observer_hears_each_step_with_its_rotation() -> None:
    w = World()
    obs = Observer()
    rot = runner(w, observer=obs).rotate(w.spec, grace=0).rotation
    rid = rot.rotation_id
    assert obs.heard == [
        ("started", rid),
        ("step", rid, "plan", "plan"), ("step", rid, "create", "create"),
        ("step", rid, "verify", "verify"), ("step", rid, "store", "store"),
        ("step", rid, "grace", "end_grace"), ("step", rid, "revoke", "revoke"),
        ("finished", rid, "completed", "revoke"),
    ]


def test_a_rotation_is_resumed_only_by_a_process_that_did_not_drive_it() -> None:
    w = World()
    r = w.runner()
    first = r.rotate(w.spec, wait=False)
    assert not first.resumed and first.rotation.step is Step.GRACE
    again = r.rotate(w.spec, wait=False)
    assert not again.resumed and again.rotation.rotation_id == first.rotation.rotation_id
    other = w.runner(holder="h2").rotate(w.spec, wait=False)
    assert other.resumed and other.rotation.rotation_id == first.rotation.rotation_id


def test_the_report_counts_the_cleanups_still_pending() -> None:
    w = World()
    w.provider.fail["delete_key"] = ProviderUnavailable("503")
    w.runner().rotate(w.spec)                         # the old key is queued
    report = w.runner().rotate(w.spec, wait=False)    # still failing: still pending
    assert (report.cleaned, report.cleanup_pending) == (0, 1)
    del w.provider.fail["delete_key"]
    report = w.runner().rotate(w.spec, wait=False)
    assert (report.cleaned, report.cleanup_pending) == (1, 0)


def test_the_crash_points_are_after_the_start_and_after_each_saved_step(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # What the crash matrix (tests/integration, a real process killed there) relies on.
    w = World()
    points: list[str] = []
    monkeypatch.setattr(runner_module, "crash_point", points.append)
    w.runner().rotate(w.spec, grace=0)
    assert points == ["started", "step:create", "step:verify", "step:store", "step:grace",
                      "step:revoke", "step:done"]


# -- the steps --------------------------------------------------------------------------
def test_the_new_key_is_named_after_the_target_and_the_rotation() -> None:
    w = World()
    rot = w.runner().rotate(w.spec, wait=False).rotation
    assert rot.new_key_id is not None
    assert w.provider.keys[rot.new_key_id].name == f"rotator:app:{rot.rotation_id}"


def _delete_accounts(w: World) -> list[str]:
    """The service account of every delete_key call from now on."""
    return spy(w.provider, "delete_key", lambda account, *_: account)


def test_a_key_left_by_a_lost_create_answer_is_deleted_and_others_kept() -> None:
    w = World(key_limit=4)
    unrelated = w.provider.key_of(w.provider.seed("sa_1"))
    create = w.provider.create_key
    lost: list[str] = []

    def create_twice(account: str, name: str, auth: Secret) -> Any:
        lost.append(w.provider._make(account, name).key_id)   # the first answer was lost
        return create(account, name, auth)

    w.provider.create_key = create_twice  # type: ignore[method-assign]
    accounts = _delete_accounts(w)
    rot = w.runner().rotate(w.spec, wait=False).rotation
    assert rot.step is Step.GRACE
    assert w.provider.deleted == lost and accounts == ["sa_1"]
    assert w.account_keys() == {rot.old_key_id, rot.new_key_id, unrelated}


def test_a_full_account_never_frees_a_key_another_rotation_uses() -> None:
    w = World(key_limit=3)
    used = w.provider.key_of(w.provider.seed("sa_1"))        # the oldest stale key
    w.clock.sleep(60)
    stale = w.provider.key_of(w.provider.seed("sa_1"))
    other = Rotation(rotation_id="rot_other", target="other", service_account="sa_1",
                     trigger="manual", actor="cli", grace_seconds=30,
                     started_at=w.clock.now(), step=Step.GRACE, new_key_id=used)
    w.repo.by_id[other.rotation_id] = other
    accounts = _delete_accounts(w)
    rot = w.runner().rotate(w.spec, wait=False).rotation
    assert rot.step is Step.GRACE and rot.new_key_id is not None
    assert w.provider.deleted == [stale] and used in w.account_keys()
    assert accounts == ["sa_1"]
    assert w.provider.keys[rot.new_key_id].name == f"rotator:app:{rot.rotation_id}"


def _probe_times(w: World) -> list[float]:
    times: list[float] = []
    whoami = w.provider.whoami
    start = w.clock.now()

    def probing(key: Secret) -> Any:
        if key != w.store.current(REF):
            times.append(seconds_since(w, start))
        return whoami(key)

    w.provider.whoami = probing  # type: ignore[method-assign]
    return times


def test_probes_back_off_doubling_to_ten_seconds_until_the_deadline() -> None:
    w = World(never_authenticates=True)
    w.spec = dataclasses.replace(w.spec, probe_timeout=40, probe_interval=1)
    times = _probe_times(w)
    rot = w.runner().rotate(w.spec).rotation
    assert rot.status is Status.ROLLED_BACK
    assert times == [0, 1, 3, 7, 15, 25, 35, 40]
    assert "within 40s (8 probes; last: 401: not authenticated (yet))" in (rot.reason or "")


def test_a_key_live_exactly_at_the_probe_deadline_is_verified() -> None:
    w = World(propagation=1)
    w.spec = dataclasses.replace(w.spec, probe_timeout=1, probe_interval=1)
    times = _probe_times(w)
    assert w.runner().rotate(w.spec, wait=False).rotation.step is Step.GRACE
    assert times == [0, 1]


def test_a_store_resumed_after_its_write_landed_records_vaults_version() -> None:
    w = World()
    w.store.crash_at = "write:after"
    with pytest.raises(Crash):
        w.runner().rotate(w.spec)
    w.store.crash_at = None
    rot = w.runner().rotate(w.spec, wait=False).rotation     # a new process: no secret
    assert rot.step is Step.GRACE and rot.new_version == 2
    assert w.vault_key() == rot.new_key_id


def test_the_new_secret_leaves_memory_once_stored() -> None:
    w = World()
    r = w.runner()
    rot = r.rotate(w.spec, wait=False).rotation
    assert rot.step is Step.GRACE
    assert r._fresh == {}


# -- a provider rate-limiting past the retry budget -------------------------------------
def test_a_create_rate_limited_past_the_budget_parks_and_the_next_run_finishes_it() -> None:
    w = World()
    keys = set(w.provider.keys)
    w.provider.fail["create_key"] = RateLimited("create_key: Count is rate limiting", 30.0)
    parked = w.runner().rotate(w.spec, grace=0).rotation
    assert (parked.step, parked.status, parked.failure) == (Step.CREATE, Status.RUNNING, None)
    assert "rate limited at create, parked" in (parked.reason or "")
    assert w.repo.leases["app"][1] == RELEASED          # let go for the next run
    assert set(w.provider.keys) == keys                                   # no key made
    assert len(w.store.versions[(REF.mount, REF.path)]) == 1              # Vault untouched
    assert not [e for e in w.repo.recorded if e.action in ("rollback", "delete_key")]
    del w.provider.fail["create_key"]
    done = w.runner().rotate(w.spec, grace=0).rotation
    assert done.rotation_id == parked.rotation_id        # the same rotation, resumed
    assert (done.status, done.reason) == (Status.COMPLETED, None)
