"""The values of core that no flow test pins down: durations, errors, secrets, rows, the
machine's rarer transitions."""

from __future__ import annotations

import copy
import pickle
import re
from datetime import UTC, datetime, timedelta

import pytest

from rotator.core import machine as m
from rotator.core.durations import format_duration, parse_duration
from rotator.core.errors import ConfigError, RateLimited, RotatorError
from rotator.core.model import AuditEvent, FailureCode, Rotation, Status, Step, StoredEvent
from rotator.core.secret import Secret
from rotator.core.vocabulary import EventKind

T = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _rot(**kw: object) -> Rotation:
    base = Rotation(rotation_id="rot_1", target="app", service_account="sa_1",
                    trigger="manual", actor="cli", grace_seconds=30, started_at=T)
    return base.evolve(**kw)


# -- durations --------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "seconds"), [
    ("1h 30m", 5400.0), (" 2m 5s ", 125.0), ("1 h", 3600.0), ("1H30M", 5400.0),
])
def test_a_duration_may_have_spaces_and_capitals(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_a_duration_of_exactly_100_years_is_the_largest_accepted() -> None:
    cap = 100 * 365 * 86400.0
    assert parse_duration(cap) == cap
    assert parse_duration(f"{100 * 365}d") == cap
    with pytest.raises(ValueError, match="at most 100 years"):
        parse_duration(cap + 1)


@pytest.mark.parametrize(("value", "words"), [
    ("soon", "invalid duration 'soon': expected e.g. '30s', '5m', '24h', '30d', '1h30m'"),
    ("-5s", "duration must not be negative, got '-5s'"),
    (-1, "duration must not be negative, got -1"),
    (True, "expected a duration like '30s', '5m', '24h' or '30d'"),
    (None, "expected a duration like '30s', '5m', '24h' or '30d'"),
    (float("nan"), "duration must be finite and at most 100 years, got nan"),
])
def test_a_bad_duration_says_what_is_wrong(value: object, words: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(words)}$"):
        parse_duration(value)


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (-5, "0s"), (0.9, "0s"), (1, "1s"), (59, "59s"), (60, "1m"), (61, "1m1s"),
    (3600, "1h"), (3661, "1h1m"), (86400, "1d"), (90061, "1d1h"), (86401, "1d1s"),
    (725.7, "12m5s"), (273600, "3d4h"),
])
def test_format_duration_shows_the_two_largest_units(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# -- errors -----------------------------------------------------------------------------
def test_an_error_renders_its_context_sorted_after_the_message() -> None:
    exc = RotatorError("boom", target="app", step="store", status=None, code=409)
    assert str(exc) == "boom (code=409, step=store, target=app)"
    assert exc.context == {"target": "app", "step": "store", "code": "409"}
    assert str(RotatorError("plain")) == "plain"
    assert exc.args == ("boom",)          # what repr, pickling and traceback tools read


def test_a_config_error_lists_each_problem_on_its_own_line() -> None:
    exc = ConfigError("invalid config", {"targets.app.grace": "not a duration",
                                         "vault.url": "missing"}, file="rotator.toml")
    assert str(exc) == ("invalid config (file=rotator.toml)\n"
                        "  targets.app.grace: not a duration\n"
                        "  vault.url: missing")
    assert str(ConfigError("invalid config")) == "invalid config"


def test_with_context_adds_identifiers_but_never_overwrites_one() -> None:
    exc = RotatorError("boom", target="app")
    same = exc.with_context(target="other", step="plan", key_id=None, attempt=2)
    assert same is exc
    assert exc.context == {"target": "app", "step": "plan", "attempt": "2"}
    assert str(exc) == "boom (attempt=2, step=plan, target=app)"


def test_rate_limited_carries_retry_after_and_its_context() -> None:
    exc = RateLimited("429", retry_after=2.5, target="app")
    assert (exc.message, exc.retry_after, exc.context) == ("429", 2.5, {"target": "app"})
    assert RateLimited("429").retry_after is None


# -- secrets ----------------------------------------------------------------------------
def test_secrets_compare_and_hash_by_value() -> None:
    a, b = Secret("cnt_aaa"), Secret("cnt_aaa")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert Secret("cnt_aaa") != Secret("cnt_bbb")
    assert Secret("cnt_aaa") != "cnt_aaa"
    assert hash(Secret("cnt_aaa")) != hash(Secret("cnt_bbb"))


@pytest.mark.parametrize("value", ["", None, 12])
def test_an_empty_or_non_string_secret_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match=r"^a secret must be a non-empty string$"):
        Secret(value)  # type: ignore[arg-type]


def test_a_secret_refuses_pickling_and_copying() -> None:
    s = Secret("cnt_secret_value")
    with pytest.raises(TypeError, match=r"^secrets are not picklable$"):
        pickle.dumps(s)
    with pytest.raises(TypeError, match="not picklable"):
        copy.deepcopy(s)
    assert repr(s) == str(s) == f"{s}" == "Secret('****')"


# -- stored audit rows ------------------------------------------------------------------
def _row() -> StoredEvent:
    return StoredEvent(id=7, at=T, rotation_id="rot_1", target="app", step="store",
                       kind=EventKind.INTENT, action="vault_write", result="ok", key_id="k1",
                       fingerprint="sha256:abc", vault_version=3, request_id="req_1",
                       op_id="op_1", detail="cas on 2", lease_generation=4)


def test_a_stored_row_gives_back_its_event() -> None:
    assert _row().to_event() == AuditEvent(
        rotation_id="rot_1", target="app", step="store", kind=EventKind.INTENT,
        action="vault_write", result="ok", key_id="k1", fingerprint="sha256:abc",
        vault_version=3, request_id="req_1", op_id="op_1", detail="cas on 2", at=T)


def test_a_stored_row_as_json_ready_dict() -> None:
    assert _row().as_dict() == {
        "id": 7, "at": "2026-11-01T12:00:00+00:00", "rotation_id": "rot_1", "target": "app",
        "step": "store", "kind": "intent", "action": "vault_write", "result": "ok",
        "key_id": "k1", "fingerprint": "sha256:abc", "vault_version": 3,
        "request_id": "req_1", "op_id": "op_1", "detail": "cas on 2", "lease_generation": 4,
        "chain_seq": None, "chain_hash": None,
    }


# -- the machine's rarer transitions ----------------------------------------------------
def test_refused_is_an_outcome_of_plan_only() -> None:
    # Only StepRunner.plan returns Refused; a refusal after plan would fail the rotation
    # without rolling back the key create may have made, so the machine has no such edge.
    rot = _rot(step=Step.CREATE, old_key_id="k0", old_version=1)
    with pytest.raises(m.InvalidTransition):
        m.advance(rot, m.Refused("nope", FailureCode.WRONG_ACCOUNT), T)


def test_a_deferred_revoke_completes_with_its_finish_time_and_reason() -> None:
    rot = _rot(step=Step.REVOKE, old_key_id="k0", new_key_id="k1")
    later = T + timedelta(minutes=1)
    done = m.advance(rot, m.RevokeDeferred("503"), later)
    assert (done.status, done.step, done.finished_at) == (Status.COMPLETED, Step.DONE, later)
    assert done.reason == "old key k0 queued for cleanup: 503"


def test_a_start_over_forgets_the_lost_key() -> None:
    rot = _rot(step=Step.VERIFY, old_key_id="k0", new_key_id="k1", new_fingerprint="sha256:x",
               recreate_count=1)
    again = m.advance(rot, m.SecretLost(), T)
    assert again.step is Step.CREATE and again.recreate_count == 2
    assert again.new_key_id is None and again.new_fingerprint is None


def test_giving_up_after_too_many_start_overs_counts_the_last_one() -> None:
    rot = _rot(step=Step.STORE, old_key_id="k0", new_key_id="k1", new_fingerprint="sha256:x",
               recreate_count=m.MAX_RECREATES)
    given_up = m.advance(rot, m.SecretLost(), T)
    assert given_up.step is Step.ROLLBACK and given_up.recreate_count == m.MAX_RECREATES + 1
    assert given_up.failure is not None
    assert given_up.failure.step is Step.STORE
    assert given_up.failure.code is FailureCode.SECRET_LOST_TOO_OFTEN
