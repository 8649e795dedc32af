"""Notices as values: bodies, signature, Slack's format, back-off, the sinks' filters, the
notices a rotation's state carries, the sweep's conditions, and the config of the sinks."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from rotator.adapters.notify import DeliveryFailed, SlackSink, WebhookSink
from rotator.cli.main import main
from rotator.config.model import load_config
from rotator.config.notifications import NotificationsConfig
from rotator.core.errors import ConfigError
from rotator.core.model import (
    AuditEvent,
    Failure,
    FailureCode,
    Rotation,
    ScheduleFacts,
    Status,
    Step,
)
from rotator.core.notices import (
    Notice,
    NoticeEvent,
    Route,
    backoff_seconds,
    event_notice,
    rotation_notices,
    routed,
    signature,
    slack_body,
    webhook_body,
)
from rotator.core.secret import Secret
from rotator.core.vocabulary import AuditAction, AuditResult, EventKind
from rotator.daemon.watch import Thresholds, conditions
from rotator.scheduling.schedule import Schedule
from tests.support import DATABASE_ONLY_CONFIG

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HMAC_KEY = "whsec-0123456789abcdef"
SLACK_URL = "https://hooks.slack.example/services/T000/B000/XXXXSECRETXXXX"


def _rotation(**changes: object) -> Rotation:
    return Rotation(rotation_id="rot_1", target="billing", service_account="sa_1",
                    trigger="schedule", actor="scheduler", grace_seconds=60.0,
                    started_at=T0).evolve(**changes)


def _notice(event: NoticeEvent = NoticeEvent.ROTATION_FAILED) -> Notice:
    return Notice(event, "billing", f"{event}:rot_1", "rotation of billing failed", T0,
                  "rot_1", {"step": "verify", "code": "probe_failed"})


def test_the_webhook_body_is_the_notice_with_its_delivery_id() -> None:
    body = webhook_body("d-1", _notice().as_json())
    assert json.loads(body) == {
        "version": 1, "delivery_id": "d-1", "event": "rotation_failed", "target": "billing",
        "rotation_id": "rot_1", "summary": "rotation of billing failed",
        "occurred_at": "2026-12-01T12:00:00+00:00",
        "details": {"step": "verify", "code": "probe_failed"}}


def test_the_signature_is_an_hmac_sha256_of_the_exact_body() -> None:
    body = webhook_body("d-1", _notice().as_json())
    expected = hmac.new(HMAC_KEY.encode(), body, hashlib.sha256).hexdigest()
    assert signature(body, HMAC_KEY.encode()) == f"sha256={expected}"
    assert signature(body + b" ", HMAC_KEY.encode()) != f"sha256={expected}"


def test_the_slack_body_has_text_and_blocks_with_the_facts() -> None:
    body = json.loads(slack_body("d-1", _notice().as_json()))
    assert body["text"] == "[rotator] rotation of billing failed"
    header, summary, facts = body["blocks"]
    assert header["text"]["text"] == "rotator: rotation_failed"
    assert summary["text"]["text"] == "rotation of billing failed"
    assert "*code*: `probe_failed`" in facts["text"]["text"]
    assert "*delivery*: `d-1`" in facts["text"]["text"]


def test_backoff_doubles_from_the_first_wait_up_to_the_cap() -> None:
    assert [backoff_seconds(n, 5, 60) for n in range(6)] == [0, 5, 10, 20, 40, 60]
    assert backoff_seconds(10_000, 5, 3600) == 3600


def test_a_sink_gets_only_the_events_its_filter_names() -> None:
    routes = [Route("ops", frozenset(NoticeEvent)),
              Route("chat", frozenset({NoticeEvent.STRAY_KEY}))]
    failed, stray = _notice(), _notice(NoticeEvent.STRAY_KEY)
    assert routed([failed, stray], routes) == [("ops", failed), ("ops", stray),
                                               ("chat", stray)]
    assert routed([failed], []) == []


def test_a_failed_or_rolled_back_rotation_carries_one_notice_each() -> None:
    failure = Failure(Step.VERIFY, FailureCode.PROBE_FAILED, "did not authenticate")
    rolled = _rotation(status=Status.ROLLED_BACK, step=Step.DONE, failure=failure,
                       reason="verify: did not authenticate", finished_at=T0)
    (notice,) = rotation_notices(rolled, T0)
    assert (notice.event, notice.dedupe_key) == (NoticeEvent.ROTATION_ROLLED_BACK,
                                                 "rotation_rolled_back:rot_1")
    assert notice.details["step"] == "verify" and notice.details["code"] == "probe_failed"
    (refused,) = rotation_notices(_rotation(status=Status.FAILED, step=Step.DONE), T0)
    assert refused.event is NoticeEvent.ROTATION_FAILED
    later = T0 + timedelta(minutes=5)
    (blocked,) = rotation_notices(_rotation(step=Step.ROLLBACK, rollback_blocked="Vault down"),
                                  later)
    assert blocked.occurred_at == later
    assert blocked.dedupe_key == "rollback_blocked:rot_1"
    assert rotation_notices(_rotation(step=Step.GRACE), T0) == []
    assert rotation_notices(_rotation(status=Status.COMPLETED, step=Step.DONE), T0) == []


def test_a_probe_finding_a_deleted_key_alive_is_a_notice() -> None:
    probe = AuditEvent(rotation_id="rot_1", target="billing", step="revoke",
                       kind=EventKind.NOTE, action=AuditAction.PROBE_REVOKED,
                       result=AuditResult.STILL_VALID, key_id="key_old")
    notice = event_notice(probe, T0)
    assert notice is not None and notice.dedupe_key == "revoked_key_alive:rot_1:key_old"
    assert event_notice(replace(probe, result=AuditResult.REFUSED), T0) is None


def test_an_old_key_revoked_at_max_grace_is_a_notice_and_a_quiet_one_is_not() -> None:
    over = AuditEvent(rotation_id="rot_1", target="billing", step="grace",
                      kind=EventKind.NOTE, action=AuditAction.GRACE_OVER,
                      result=AuditResult.MAX_GRACE_REACHED, key_id="key_old",
                      detail="max_grace 7d reached; last use 2026-12-01: revoking it")
    notice = event_notice(over, T0)
    assert notice is not None and notice.event is NoticeEvent.MAX_GRACE_REACHED
    assert notice.dedupe_key == "max_grace_reached:rot_1:key_old"
    assert notice.details == {"key_id": "key_old", "decision": over.detail}
    assert "key_old" in notice.summary and "billing" in notice.summary
    for quiet in (AuditResult.QUIET, None):
        assert event_notice(replace(over, result=quiet), T0) is None
    assert event_notice(replace(over, action=AuditAction.GRACE_HELD), T0) is None


LIMITS = Thresholds(stuck_after=3600, overdue_after=86400)


def _events(notices: list[Notice]) -> list[tuple[NoticeEvent, str]]:
    return [(n.event, n.dedupe_key) for n in notices]


def test_a_rotation_in_one_step_past_the_threshold_is_stuck_once_per_step() -> None:
    facts = ScheduleFacts(None, 0, None)
    schedule = Schedule(every=30 * 86400)
    verify = _rotation(step=Step.VERIFY)
    assert conditions("billing", schedule, facts, verify, T0 + timedelta(minutes=59),
                      LIMITS) == []
    assert _events(conditions("billing", schedule, facts, verify, T0 + timedelta(hours=2),
                              LIMITS)) == [(NoticeEvent.ROTATION_STUCK,
                                            "rotation_stuck:rot_1:verify")]
    # In grace, the clock starts when the window ends.
    grace = _rotation(step=Step.GRACE, grace_ends_at=T0 + timedelta(days=1))
    assert conditions("billing", schedule, facts, grace, T0 + timedelta(days=1, minutes=30),
                      LIMITS) == []
    assert _events(conditions("billing", schedule, facts, grace,
                              T0 + timedelta(days=1, hours=2), LIMITS))[0][1] \
        == "rotation_stuck:rot_1:grace"


def test_overdue_and_a_key_too_old_are_once_per_completed_rotation() -> None:
    done = _rotation(status=Status.COMPLETED, step=Step.DONE, new_key_id="key_2",
                     grace_ends_at=T0 + timedelta(minutes=1), finished_at=T0)
    schedule = Schedule(every=30 * 86400, max_key_age=40 * 86400)
    failing = ScheduleFacts(done, 3, T0 + timedelta(days=30))
    on_time = T0 + timedelta(days=30, hours=12)
    assert conditions("billing", schedule, failing, None, on_time, LIMITS) == []
    late = T0 + timedelta(days=41)
    assert _events(conditions("billing", schedule, failing, None, late, LIMITS)) == [
        (NoticeEvent.TARGET_OVERDUE, "target_overdue:billing:rot_1"),
        (NoticeEvent.KEY_TOO_OLD, "key_too_old:billing:key_2")]
    # A rotation replacing the old key is running: the key's age is being dealt with.
    running = _rotation(rotation_id="rot_2", step=Step.CREATE, started_at=late)
    assert _events(conditions("billing", schedule, failing, running, late, LIMITS)) == [
        (NoticeEvent.TARGET_OVERDUE, "target_overdue:billing:rot_1")]
    # Never rotated: due now, never late.
    assert conditions("billing", schedule, ScheduleFacts(None, 0, None), None, late,
                      LIMITS) == []


def _transport(seen: list[httpx.Request], status: int = 204) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status)
    return httpx.MockTransport(answer)


def test_the_webhook_sink_signs_the_body_it_sends_and_names_the_delivery() -> None:
    seen: list[httpx.Request] = []
    sink = WebhookSink("https://hooks.example/rotator", Secret(HMAC_KEY), timeout=5,
                       transport=_transport(seen))
    sink.send("d-1", "rotation_failed", _notice().as_json())
    (request,) = seen
    assert request.headers["X-Rotator-Signature"] == signature(request.content,
                                                                HMAC_KEY.encode())
    assert request.headers["X-Rotator-Delivery"] == "d-1"
    assert json.loads(request.content)["delivery_id"] == "d-1"
    assert HMAC_KEY not in request.content.decode()


def test_a_refused_delivery_names_the_status_not_the_url() -> None:
    sink = SlackSink(Secret(SLACK_URL), timeout=5, transport=_transport([], status=500))
    with pytest.raises(DeliveryFailed) as caught:
        sink.send("d-1", "rotation_failed", _notice().as_json())
    assert str(caught.value) == "the receiver answered HTTP 500"
    assert "XXXXSECRETXXXX" not in repr(caught.value)


def test_sinks_config_names_events_and_one_secret_source() -> None:
    config = NotificationsConfig.model_validate({"sinks": {
        "ops": {"type": "webhook", "url": "https://hooks.example/r", "secret_env": "HOOK_KEY",
                "events": ["rotation_failed", "stray_key"]},
        "chat": {"type": "slack", "url_file": "/run/secrets/slack"}}})
    routes = {r.sink: r.events for r in config.routes()}
    assert routes == {"ops": {NoticeEvent.ROTATION_FAILED, NoticeEvent.STRAY_KEY},
                      "chat": set(NoticeEvent)}


@pytest.mark.parametrize(("sink", "key", "words"), [
    ('type = "webhook"\nurl = "https://h.example/r"', "notifications.sinks.ops.webhook",
     "exactly one source"),
    (f'type = "webhook"\nurl = "https://h.example/r"\nsecret = "{HMAC_KEY}"',
     "notifications.sinks.ops.webhook", "must not be written in the config file"),
    ('type = "webhook"\nurl = "https://h.example/r"\nsecret_env = "K"\n'
     'events = ["rotation_exploded"]', "notifications.sinks.ops.webhook.events.0",
     "rotation_failed"),
    # The URL pasted where its variable's name belongs.
    (f'type = "slack"\nurl_env = "{SLACK_URL}"', "notifications.sinks.ops.slack.url_env",
     "not the name of an environment variable"),
])
def test_a_bad_sink_is_a_config_error_naming_its_key_and_quoting_no_secret(
        tmp_path: Path, sink: str, key: str, words: str) -> None:
    path = tmp_path / "rotator.toml"
    path.write_text(DATABASE_ONLY_CONFIG.format(url="sqlite:///x.db")
                    + f"[notifications.sinks.ops]\n{sink}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = caught.value.problems
    assert any(k.startswith(key) and words in v for k, v in problems.items()), problems
    assert HMAC_KEY not in str(caught.value) + repr(problems)
    assert "SECRETXXXX" not in str(caught.value) + repr(problems)


def test_check_config_names_a_sink_secret_it_cannot_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IT_UNSET_HOOK_KEY", raising=False)
    path = tmp_path / "rotator.toml"
    path.write_text(DATABASE_ONLY_CONFIG.format(url="sqlite:///x.db")
                    + '[notifications.sinks.ops]\ntype = "webhook"\n'
                    'url = "https://h.example/r"\nsecret_env = "IT_UNSET_HOOK_KEY"\n')
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "notifications.sinks.ops.secret_env" in err and "IT_UNSET_HOOK_KEY" in err


def test_every_event_a_sink_can_ask_for_is_documented_with_its_dedupe_key() -> None:
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text().split("\n## Notifications", 1)[1]
    readme = readme.split("\n## ", 1)[0]
    guide = (root / "docs" / "notifications.md").read_text()
    cause = guide.split("| cause |", 1)[1].split("\n\n", 1)[0]
    keys = guide.split("| dedupe key |", 1)[1].split("\n\n", 1)[0]
    for event in NoticeEvent:
        assert f"| `{event}` |" in readme, f"README's Notifications table lacks {event}"
        assert f"`{event}`" in cause, f"docs/notifications.md names no cause of {event}"
        assert f"`{event}" in keys, f"docs/notifications.md names no dedupe key of {event}"
