"""After the old key is deleted it is probed once: the audit trail says whether it is dead.

Against the fakes: a provider that revokes at once, one that takes a moment (the probe
waits, boundedly), one that never revokes, a crash between the delete and the probe, a
Vault that no longer has the old key's version, and a deletion the cleanup queue makes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from datetime import datetime
from typing import Any

import pytest
import structlog

from rotator.core.errors import ProviderUnavailable, SecretNotFound
from rotator.core.model import AuditEvent, Rotation, Status
from rotator.core.ports import Identity
from rotator.core.secret import Secret
from rotator.core.target import TargetSpec
from rotator.core.vocabulary import AuditAction, AuditResult, EventKind
from tests.fakes import Crash
from tests.unit.test_runner import World

Event = dict[str, Any]


def _probes(w: World) -> list[AuditEvent]:
    return [e for e in w.repo.recorded if e.action == AuditAction.PROBE_REVOKED]


def _no_secret_in_rows(w: World) -> None:
    issued = [w.first.reveal(), *(k.secret for k, _ in w.provider.lingering.values()),
              *(k.secret for k in w.provider.keys.values())]
    dump = repr([asdict(e) for e in w.repo.recorded])
    assert not [s for s in issued if s in dump]


def test_a_revoked_key_is_probed_once_and_recorded_refused() -> None:
    w = World()
    old = w.provider.key_of(w.first)
    rot = w.runner().rotate(w.spec).rotation
    assert rot.status is Status.COMPLETED
    (probe,) = _probes(w)
    assert (probe.kind, probe.result, probe.key_id) == (EventKind.NOTE, AuditResult.REFUSED,
                                                        old)
    assert probe.fingerprint == w.first.fingerprint
    # Right after the revoke's outcome, before the rotation's ending note.
    actions = [(e.action, e.kind) for e in w.repo.recorded]
    revoked = actions.index((AuditAction.REVOKE_KEY, EventKind.OUTCOME))
    assert actions[revoked + 1:] == [(AuditAction.PROBE_REVOKED, EventKind.NOTE),
                                     (AuditAction.COMPLETED, EventKind.NOTE)]
    w.assert_invariants()


def test_a_provider_slow_to_revoke_is_waited_for_a_few_seconds() -> None:
    w = World(revoke_lag=2.5)
    w.runner().rotate(w.spec)
    (probe,) = _probes(w)
    assert probe.result is AuditResult.REFUSED
    assert probe.detail == "refused at probe 3: the provider revoked it"   # at 0 s, 1 s, 3 s


def test_a_key_the_provider_did_not_revoke_is_recorded_still_valid_and_logged() -> None:
    w = World(revoke_lag=math.inf)
    old = w.provider.key_of(w.first)
    with structlog.testing.capture_logs() as logs:
        rot = w.runner().rotate(w.spec).rotation
    assert rot.status is Status.COMPLETED           # the key was deleted; the finding is apart
    (probe,) = _probes(w)
    assert (probe.result, probe.key_id) == (AuditResult.STILL_VALID, old)
    assert "the provider did not revoke it" in (probe.detail or "")
    # Bounded: probes for 5 s at most (the target's probe interval, doubling, capped at 2 s).
    revoked = next(e for e in w.repo.recorded if e.action == AuditAction.REVOKE_KEY
                   and e.kind is EventKind.OUTCOME)
    assert probe.at is not None and revoked.at is not None
    assert (probe.at - revoked.at).total_seconds() == 5.0
    assert "after 4 probe(s)" in (probe.detail or "")
    loud = [e for e in logs if e["event"] == "revoked_key_still_authenticates"]
    assert len(loud) == 1 and loud[0]["log_level"] == "error"
    assert loud[0]["key_id"] == old and loud[0]["rotation_id"] == rot.rotation_id
    assert w.first.reveal() not in repr(logs)
    _no_secret_in_rows(w)


@pytest.mark.parametrize("moment", ["after", "before"])
def test_a_crash_around_the_delete_still_probes_the_old_key_on_resume(moment: str) -> None:
    w = World()
    w.provider.crash_at = f"delete_key:{moment}"
    with pytest.raises(Crash):
        w.runner("h1").rotate(w.spec)
    assert _probes(w) == []
    w.provider.crash_at = None
    w.clock.sleep(120)                       # past the dead holder's lease
    rot = w.runner("h2").rotate(w.spec).rotation
    assert rot.status is Status.COMPLETED
    # The resumed revoke finds the key gone (or deletes it) and probes it from Vault's
    # version of it: the secret was never in memory only, nor in SQL.
    (probe,) = _probes(w)
    assert probe.result is AuditResult.REFUSED
    w.assert_invariants()


def test_an_old_key_vault_no_longer_has_is_recorded_as_not_probed() -> None:
    w = World()
    real = w.store.read_version

    def pruned(ref: object, version: int) -> object:
        raise SecretNotFound("no such version", version=version)

    w.store.read_version = pruned  # type: ignore[method-assign,assignment]
    with structlog.testing.capture_logs() as logs:
        rot = w.runner().rotate(w.spec).rotation
    w.store.read_version = real  # type: ignore[method-assign]
    assert rot.status is Status.COMPLETED
    (probe,) = _probes(w)
    assert probe.result is AuditResult.UNKNOWN
    assert (probe.detail or "").startswith("not probed: cannot read the old key from Vault")
    assert [e["log_level"] for e in logs if e["event"] == "revoked_key_unprobed"] == [
        "warning"]


def test_a_probe_that_keeps_failing_is_recorded_as_unknown_not_refused() -> None:
    w = World()
    runner = w.runner()
    real = w.provider.whoami
    calls = 0

    def failing_after_revoke(key: object) -> object:
        nonlocal calls
        if any(e.action == AuditAction.REVOKE_KEY for e in w.repo.recorded):
            calls += 1
            raise ProviderUnavailable("503")
        return real(key)  # type: ignore[arg-type]

    w.provider.whoami = failing_after_revoke  # type: ignore[method-assign,assignment]
    runner.rotate(w.spec)
    (probe,) = _probes(w)
    assert probe.result is AuditResult.UNKNOWN and calls == 4
    assert (probe.detail or "").startswith("could not probe it: ProviderUnavailable")


def test_a_deferred_revoke_is_probed_when_the_cleanup_queue_deletes_the_key() -> None:
    w = World(revoke_lag=math.inf)
    w.provider.fail["delete_key"] = ProviderUnavailable("503")
    rot = w.runner().rotate(w.spec).rotation
    assert rot.status is Status.COMPLETED and _probes(w) == []    # nothing deleted yet
    del w.provider.fail["delete_key"]
    assert w.runner().cleanup(w.spec) == (1, 0)
    (probe,) = _probes(w)
    assert (probe.rotation_id, probe.result) == (rot.rotation_id, AuditResult.STILL_VALID)
    assert probe.step == "done"
    _no_secret_in_rows(w)


# -- what each finding says, whole, and its log event ---------------------------------

def _logged(w: World, spec: TargetSpec | None = None) -> tuple[Rotation, list[Event]]:
    with structlog.testing.capture_logs() as logs:
        rot = w.runner().rotate(spec or w.spec).rotation
    return rot, [e for e in logs if e["event"].startswith("revoked_key_")]


def test_a_refused_probe_is_noted_whole_and_logs_nothing() -> None:
    w = World()
    rot, logs = _logged(w)
    (probe,) = _probes(w)
    assert probe.detail == "refused at probe 1: the provider revoked it"
    assert probe.key_id == rot.old_key_id and logs == []


def test_a_key_still_valid_is_noted_whole_and_logged_as_an_error() -> None:
    w = World(revoke_lag=math.inf)
    old = w.provider.key_of(w.first)
    rot, logs = _logged(w)
    (probe,) = _probes(w)
    detail = (f"still authenticates as sa_1/{old} after 4 probe(s): "
              "the provider did not revoke it")
    assert (probe.detail, probe.fingerprint) == (detail, w.first.fingerprint)
    assert logs == [{"event": "revoked_key_still_authenticates", "log_level": "error",
                     "rotation_id": rot.rotation_id, "key_id": old, "detail": detail}]


def test_a_probe_that_cannot_reach_the_provider_is_noted_whole_and_logged() -> None:
    w = World()
    old = w.provider.key_of(w.first)
    real = w.provider.whoami

    def failing_after_revoke(key: Secret) -> Identity:
        if any(e.action == AuditAction.REVOKE_KEY for e in w.repo.recorded):
            raise ProviderUnavailable("503")
        return real(key)

    w.provider.whoami = failing_after_revoke  # type: ignore[method-assign]
    rot, logs = _logged(w)
    (probe,) = _probes(w)
    detail = "could not probe it: ProviderUnavailable: 503"
    assert (probe.result, probe.detail, probe.fingerprint) == (
        AuditResult.UNKNOWN, detail, w.first.fingerprint)
    assert logs == [{"event": "revoked_key_unprobed", "log_level": "warning",
                     "rotation_id": rot.rotation_id, "key_id": old, "detail": detail}]


def test_an_unreadable_old_version_is_noted_whole_without_a_fingerprint() -> None:
    w = World()
    old = w.provider.key_of(w.first)

    def pruned(ref: object, version: int) -> object:
        raise SecretNotFound("no such version", version=version)

    w.store.read_version = pruned  # type: ignore[method-assign,assignment]
    rot, logs = _logged(w)
    (probe,) = _probes(w)
    detail = ("not probed: cannot read the old key from Vault version 1: "
              "SecretNotFound: no such version (version=1)")
    assert (probe.result, probe.detail, probe.fingerprint, probe.key_id) == (
        AuditResult.UNKNOWN, detail, None, old)
    assert logs == [{"event": "revoked_key_unprobed", "log_level": "warning",
                     "rotation_id": rot.rotation_id, "key_id": old, "detail": detail}]


def test_a_rotation_that_recorded_no_old_version_is_noted_as_not_probed() -> None:
    w = World()
    rot = w.runner().rotate(w.spec, wait=False).rotation       # in grace
    w.repo.by_id[rot.rotation_id] = replace(rot, old_version=None)
    w.clock.sleep(30)
    w.runner().rotate(w.spec)
    (probe,) = _probes(w)
    assert (probe.result, probe.detail, probe.fingerprint) == (
        AuditResult.UNKNOWN,
        "not probed: cannot read the old key from Vault version None: "
        "SecretNotFound: the rotation recorded no Vault version for it", None)


# -- the schedule: the target's probe interval, doubling, capped at 2 s, for 5 s at most --

def _probe_times(w: World, spec: TargetSpec) -> list[float]:
    """Seconds after the revoke's outcome at which the deleted old key was probed."""
    real = w.provider.whoami
    at: list[datetime] = []

    def timed(key: Secret) -> Identity:
        if key == w.first and any(e.action == AuditAction.REVOKE_KEY for e in w.repo.recorded):
            at.append(w.clock.now())
        return real(key)

    w.provider.whoami = timed  # type: ignore[method-assign]
    w.runner().rotate(spec)
    revoked = next(e.at for e in w.repo.recorded if e.action == AuditAction.REVOKE_KEY
                   and e.kind is EventKind.OUTCOME)
    assert revoked is not None
    return [(t - revoked).total_seconds() for t in at]


@pytest.mark.parametrize(("interval", "timeout", "times"), [
    (1, 20, [0, 1, 3, 5]),                       # 1 s, 2 s, then what is left of the 5 s
    (2, 20, [0, 2, 4, 5]),                       # capped at 2 s, not 4
    (0.25, 20, [0, 0.25, 0.75, 1.75, 3.75, 5]),  # doubling from the interval
    (1, 2, [0, 1, 2]),                           # a probe timeout under 5 s bounds it
], ids=["1s", "2s", "quarter", "short timeout"])
def test_a_key_not_revoked_is_probed_on_this_schedule(
        interval: float, timeout: float, times: list[float]) -> None:
    w = World(revoke_lag=math.inf)
    spec = replace(w.spec, probe_interval=interval, probe_timeout=timeout)
    assert _probe_times(w, spec) == times
