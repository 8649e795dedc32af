"""Notifications from the app layer: the sinks of a config, and enqueuing a notice.

``enqueue`` is the one entry for a caller that found something outside a rotation's own
writes (``verify``'s stray keys; a ``reconcile`` command's): it writes the notices to the
outbox, and the daemon's dispatcher delivers them. A rotation's own notices (failed,
rolled back, rollback blocked, a deleted key alive) never pass here: the repository
writes them in the transaction of the state change (``SqlRepository``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from rotator.adapters.notify import Sink, SlackSink, WebhookSink
from rotator.app.reconcile import StrayKey
from rotator.app.runtime import Runtime
from rotator.app.verify import Finding, FindingKind
from rotator.config.model import Config
from rotator.config.notifications import WebhookSinkConfig
from rotator.config.secret_sources import resolve_secret
from rotator.core.notices import Notice, NoticeEvent
from rotator.core.secret import Secret
from rotator.redaction import remember_secret

__all__ = [
    "build_sinks",
    "enqueue",
    "notify_reconciled_strays",
    "notify_stray_keys",
    "sink_secrets",
    "stray_key_notice",
]


def sink_secrets(config: Config) -> dict[str, Secret]:
    """Each sink's secret (a webhook's HMAC key, a Slack webhook's URL), read from its one
    source and known to the redactor from then on; ``ConfigError`` naming the key if one
    cannot be read (``check-config`` reports it, the daemon refuses to start)."""
    secrets: dict[str, Secret] = {}
    for name, sink in config.notifications.sinks.items():
        key = f"notifications.sinks.{name}"
        if isinstance(sink, WebhookSinkConfig):
            secret = resolve_secret(f"{key}.secret", sink.secret_env, sink.secret_file)
        else:
            secret = resolve_secret(f"{key}.url", sink.url_env, sink.url_file)
        remember_secret(secret, pinned=True)
        secrets[name] = secret
    return secrets


def build_sinks(config: Config) -> dict[str, Sink]:
    """A live sink per configured name, each with a guarded HTTP client of its own."""
    secrets = sink_secrets(config)
    sinks: dict[str, Sink] = {}
    for name, sink in config.notifications.sinks.items():
        verify: bool | str = str(sink.ca_bundle) if sink.ca_bundle else True
        if isinstance(sink, WebhookSinkConfig):
            sinks[name] = WebhookSink(sink.url, secrets[name], timeout=sink.timeout,
                                      verify=verify, proxy=sink.proxy)
        else:
            sinks[name] = SlackSink(secrets[name], timeout=sink.timeout, verify=verify,
                                    proxy=sink.proxy)
    return sinks


def enqueue(rt: Runtime, notices: Iterable[Notice]) -> int:
    """Put ``notices`` in the outbox for every sink whose filter takes them; how many rows
    are new (a notice whose dedupe key is there already is not sent again)."""
    return rt.repo.outbox.enqueue(notices, rt.clock.now())


def stray_key_notice(target: str, key_id: str, detail: str, at: datetime) -> Notice:
    """A key at the provider that no rotation accounts for; once per target and key."""
    event = NoticeEvent.STRAY_KEY
    return Notice(event, target, f"{event}:{target}:{key_id}",
                  f"stray key {key_id} at the provider for {target}", at,
                  details={"key_id": key_id, "detail": detail})


def notify_stray_keys(rt: Runtime, findings: Iterable[Finding]) -> int:
    """Enqueue a ``stray_key`` notice for each ``leaked_key`` finding of ``verify``."""
    now = rt.clock.now()
    return enqueue(rt, [stray_key_notice(f.target, f.key_id, f.detail, now)
                        for f in findings
                        if f.kind is FindingKind.LEAKED_KEY and f.key_id is not None])


def notify_reconciled_strays(rt: Runtime, strays: Iterable[StrayKey]) -> int:
    """Enqueue a ``stray_key`` notice for each stray key ``reconcile`` found, deleted or
    not: found by ``verify`` too, it is still one notice (the same dedupe key)."""
    now = rt.clock.now()
    return enqueue(rt, [stray_key_notice(
        s.target, s.key.key_id,
        f"reconcile: {s.outcome}" + ("" if s.note is None else f" ({s.note})"), now)
        for s in strays])
