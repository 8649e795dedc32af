"""Notifications as values: what happened, to which sinks, in which body, when to retry.

    NoticeEvent     the events a sink can ask for (``[notifications.sinks.*] events``)
    Notice          one occurrence, with the key that makes it unique (``dedupe_key``):
                    enqueued twice, it is delivered once per sink
    Route           a sink's name and the events it wants
    routed          which sinks a notice goes to
    rotation_notices / event_notice
                    the notices a state change or an audit row carries, written in
                    its transaction
    webhook_body / slack_body / signature
                    what a receiver gets, and the HMAC that proves who sent it
    backoff_seconds the wait before the next attempt of a delivery that failed

A notice holds ids, step names, codes and the failure's words, never key material: the
rotation's fields it is built from hold none (``tables.py``). Standard library only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from rotator.core.model import AuditEvent, Rotation, Status
from rotator.core.vocabulary import AuditAction, AuditResult

__all__ = [
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "Notice",
    "NoticeEvent",
    "Route",
    "backoff_seconds",
    "event_notice",
    "rotation_notices",
    "routed",
    "signature",
    "slack_body",
    "webhook_body",
]

SIGNATURE_HEADER = "X-Rotator-Signature"
DELIVERY_HEADER = "X-Rotator-Delivery"
EVENT_HEADER = "X-Rotator-Event"

# The version of the webhook body's shape: a receiver can refuse one it does not know.
BODY_VERSION = 1


class NoticeEvent(StrEnum):
    ROTATION_FAILED = "rotation_failed"          # refused or failed before any change
    ROTATION_ROLLED_BACK = "rotation_rolled_back"
    ROLLBACK_BLOCKED = "rollback_blocked"        # the rollback waits: Vault unreadable
    ROTATION_STUCK = "rotation_stuck"            # in one step past [notifications] stuck_after
    TARGET_OVERDUE = "target_overdue"            # its schedule came due long ago, no success
    KEY_TOO_OLD = "key_too_old"                  # the key Vault serves is past max_key_age
    REVOKED_KEY_ALIVE = "revoked_key_alive"      # a deleted key still authenticates
    MAX_GRACE_REACHED = "max_grace_reached"      # an old key revoked at max_grace, not quiet
    STRAY_KEY = "stray_key"                      # a key at the provider nothing accounts for


Detail = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class Notice:
    event: NoticeEvent
    target: str
    dedupe_key: str          # one delivery per sink for each key, however often enqueued
    summary: str             # one line for a human (Slack's text)
    occurred_at: datetime
    rotation_id: str | None = None
    details: Mapping[str, Detail] = field(default_factory=dict)

    def as_json(self) -> str:
        """The stored form: what the outbox keeps and every body is built from."""
        return json.dumps({
            "event": str(self.event), "target": self.target, "summary": self.summary,
            "occurred_at": self.occurred_at.isoformat(), "rotation_id": self.rotation_id,
            "details": dict(self.details)}, sort_keys=True)


@dataclass(frozen=True, slots=True)
class Route:
    sink: str
    events: frozenset[NoticeEvent]


def routed(notices: Iterable[Notice], routes: Sequence[Route]) -> list[tuple[str, Notice]]:
    """Each notice paired with every sink whose filter takes its event."""
    return [(route.sink, notice) for notice in notices for route in routes
            if notice.event in route.events]


def rotation_notices(rotation: Rotation, at: datetime) -> list[Notice]:
    """What a rotation's state, saved at ``at``, is worth telling: its bad ending or a
    blocked rollback.

    Derived from the state alone, so the write that saves it enqueues them in its own
    transaction; saved again in the same state, the dedupe keys make them no-ops.
    """
    notices: list[Notice] = []
    when = rotation.finished_at or at
    failure = rotation.failure
    details: dict[str, Detail] = {
        "step": None if failure is None or failure.step is None else str(failure.step),
        "code": None if failure is None else str(failure.code),
        "reason": rotation.reason, "trigger": rotation.trigger, "actor": rotation.actor,
        "old_key_id": rotation.old_key_id, "new_key_id": rotation.new_key_id,
    }
    if rotation.status in (Status.FAILED, Status.ROLLED_BACK):
        event = (NoticeEvent.ROTATION_FAILED if rotation.status is Status.FAILED
                 else NoticeEvent.ROTATION_ROLLED_BACK)
        notices.append(Notice(
            event, rotation.target, f"{event}:{rotation.rotation_id}",
            f"rotation of {rotation.target} {rotation.status}: {rotation.reason or 'no reason'}",
            when, rotation.rotation_id, details))
    elif rotation.rollback_blocked is not None:
        event = NoticeEvent.ROLLBACK_BLOCKED
        notices.append(Notice(
            event, rotation.target, f"{event}:{rotation.rotation_id}",
            f"rollback of {rotation.target} blocked: {rotation.rollback_blocked}",
            when, rotation.rotation_id,
            {**details, "blocked": rotation.rollback_blocked}))
    return notices


def event_notice(event: AuditEvent, at: datetime) -> Notice | None:
    """The notice an audit row is worth: a deleted key found still authenticating, or an
    old key revoked at ``max_grace`` before it was seen quiet (still used, or its use
    unreadable), which a consumer that has not switched would feel."""
    when = event.at or at
    if event.action == AuditAction.PROBE_REVOKED and event.result == AuditResult.STILL_VALID:
        kind = NoticeEvent.REVOKED_KEY_ALIVE
        return Notice(kind, event.target, f"{kind}:{event.rotation_id}:{event.key_id}",
                      f"deleted key {event.key_id} of {event.target} still authenticates",
                      when, event.rotation_id, {"key_id": event.key_id})
    if (event.action == AuditAction.GRACE_OVER
            and event.result == AuditResult.MAX_GRACE_REACHED):
        kind = NoticeEvent.MAX_GRACE_REACHED
        return Notice(kind, event.target, f"{kind}:{event.rotation_id}:{event.key_id}",
                      f"old key {event.key_id} of {event.target} revoked at max_grace "
                      f"before it was seen quiet: a consumer may not have switched",
                      when, event.rotation_id, {"key_id": event.key_id,
                                                "decision": event.detail})
    return None


def webhook_body(delivery_id: str, stored: str) -> bytes:
    """The generic webhook's JSON body: the stored notice with its delivery id."""
    notice: dict[str, Any] = json.loads(stored)
    body = {"version": BODY_VERSION, "delivery_id": delivery_id, **notice}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")


def slack_body(delivery_id: str, stored: str) -> bytes:
    """A Slack incoming-webhook body: ``text`` (the fallback) and blocks with the facts."""
    notice: dict[str, Any] = json.loads(stored)
    facts = {"target": notice["target"], "rotation": notice.get("rotation_id"),
             **notice.get("details", {}), "delivery": delivery_id}
    lines = "\n".join(f"*{name}*: `{value}`" for name, value in facts.items()
                      if value is not None)
    body = {"text": f"[rotator] {notice['summary']}", "blocks": [
        {"type": "header", "text": {"type": "plain_text",
                                    "text": f"rotator: {notice['event']}"[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": notice["summary"][:3000]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": lines[:3000] or "-"}},
    ]}
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def signature(body: bytes, secret: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of the exact body bytes, the header's value."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def backoff_seconds(attempts: int, first: float, cap: float) -> float:
    """The wait after the ``attempts``-th failed attempt: ``first``, doubling, at most ``cap``."""
    if attempts < 1:
        return 0.0
    return min(cap, first * 2.0 ** min(attempts - 1, 62))
