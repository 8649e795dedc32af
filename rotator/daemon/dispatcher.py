"""The daemon's notification dispatcher: delivers the outbox's due rows, at least once.

A thread of its own, so a slow receiver never holds up a sweep: every
``[notifications] dispatch_interval`` (and at once when a piece of work ends, which may
have enqueued a notice) it claims the due rows of the sinks it knows, makes one attempt
each, and writes the result back: ``delivered_at``, or one more attempt with its error and
the next attempt's time (``backoff`` first, doubling up to ``max_backoff``, never giving
up). Everything it knows is in SQL, so a restart (a SIGKILL included) resumes where it was:
a row it had claimed is sent again once the claim lapses.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import structlog
from sqlalchemy.exc import SQLAlchemyError

from rotator.adapters.notify import DeliveryFailed, Sink
from rotator.adapters.sql.outbox import Delivery, SqlOutbox
from rotator.core.notices import backoff_seconds
from rotator.core.ports import Clock
from rotator.daemon.metrics import DaemonMetrics

__all__ = ["Dispatcher", "SinkPolicy"]

log = structlog.get_logger("rotator.notify")

# A claim outlives the attempt it covers by this much: time to write the result back.
_CLAIM_MARGIN_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class SinkPolicy:
    timeout: float
    backoff: float
    max_backoff: float

    @property
    def hold_seconds(self) -> float:
        """How long a claim keeps other replicas off a row: the attempt, then the margin."""
        return self.timeout + _CLAIM_MARGIN_SECONDS


class Dispatcher:
    def __init__(self, outbox: SqlOutbox, sinks: Mapping[str, Sink],
                 policies: Mapping[str, SinkPolicy], *, holder: str, clock: Clock,
                 metrics: DaemonMetrics, interval: float) -> None:
        self._outbox, self._sinks, self._policies = outbox, dict(sinks), dict(policies)
        self._holder, self._clock, self._metrics = holder, clock, metrics
        self._interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        metrics.declare_sinks(self._sinks)

    def start(self) -> None:
        self._say_unsendable()
        if not self._sinks:
            return
        self._thread = threading.Thread(target=self._loop, name="notify", daemon=True)
        self._thread.start()

    def _say_unsendable(self) -> None:
        """Warn, once at start, of notices waiting for a sink no longer in the config: no
        dispatcher sends them, and no gauge counts them, so they would wait unseen."""
        try:
            pending = self._outbox.pending()
        except SQLAlchemyError as exc:   # the database is down: the sweep says so
            log.debug("notifications_unsendable_unknown", error=type(exc).__name__)
            return
        for sink, count in sorted(pending.items()):
            if count and sink not in self._sinks:
                log.warning("notifications_unsendable", sink=sink, pending=count,
                            detail="this sink is no longer in the config, so these notices "
                                   "are never sent: put [notifications.sinks."
                                   f"{sink}] back, or delete them (docs/notifications.md)")

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float) -> None:
        """Stop after the attempt in progress (each is bounded by its sink's timeout)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                while self.dispatch() and not self._stop.is_set():
                    pass    # a full pass: there may be more due at once
            except SQLAlchemyError as exc:
                log.warning("notify_dispatch_failed", error=type(exc).__name__)
            except Exception:
                log.exception("notify_dispatch_failed")
            self._wake.wait(self._interval)

    def dispatch(self, limit: int = 20) -> int:
        """One pass: up to ``limit`` due rows, each claimed just before its attempt (a
        claim covers one attempt, so it never lapses while it waits behind others); how
        many were attempted, 0 once none is left due."""
        hold = max((p.hold_seconds for p in self._policies.values()), default=0.0)
        sinks = tuple(self._sinks)
        attempted = 0
        while attempted < limit and not self._stop.is_set():
            claimed = self._outbox.claim(self._holder, self._clock.now(), hold, 1, sinks)
            if not claimed:
                break
            self._attempt(claimed[0])
            attempted += 1
        for sink, count in self._outbox.pending().items():
            if sink in self._sinks:
                self._metrics.notifications_pending.labels(sink=sink).set(count)
        return attempted if attempted >= limit else 0

    def _attempt(self, delivery: Delivery) -> None:
        sink, policy = self._sinks[delivery.sink], self._policies[delivery.sink]
        self._metrics.notifications_attempted.labels(sink=delivery.sink).inc()
        try:
            sink.send(delivery.delivery_id, delivery.event, delivery.notice)
        except DeliveryFailed as exc:
            attempts = delivery.attempts + 1
            wait = backoff_seconds(attempts, policy.backoff, policy.max_backoff)
            self._metrics.notifications_failed.labels(sink=delivery.sink).inc()
            log.warning("notification_not_delivered", sink=delivery.sink,
                        notice=delivery.event, delivery_id=delivery.delivery_id,
                        attempts=attempts, error=str(exc), retry_in=wait)
            self._outbox.failed(delivery, self._holder, str(exc),
                                self._clock.now() + timedelta(seconds=wait))
            return
        self._metrics.notifications_delivered.labels(sink=delivery.sink).inc()
        log.info("notification_delivered", sink=delivery.sink, notice=delivery.event,
                 delivery_id=delivery.delivery_id, attempts=delivery.attempts + 1)
        self._outbox.delivered(delivery, self._clock.now())

    def close(self) -> None:
        for sink in self._sinks.values():
            sink.close()
