"""The daemon's Prometheus metrics, on a registry of its own (tests build as many as they like).

    rotator_rotations_started_total{target,trigger}
    rotator_rotations_completed_total{target}
    rotator_rotations_failed_total{target,reason}         reason: the step that refused
    rotator_rotations_rolled_back_total{target,reason}    reason: the step that failed
    rotator_rotation_failures_total{target}               failed or rolled back, any reason
    rotator_step_duration_seconds{step}                   histogram, one sample per action
    rotator_provider_calls_total{provider,call,status}    status: HTTP code, or "none"
    rotator_provider_rate_limited_total{provider}         429 answers
    rotator_provider_retries_total{provider,call}         attempts after the first
    rotator_rotations_in_flight                           running rotations (SQL, last sweep)
    rotator_seconds_since_last_success{target}            computed at scrape time
    rotator_key_age_seconds{target}                       since the key went into Vault
    rotator_next_rotation_timestamp_seconds{target}       when the schedule next fires
    rotator_ready                                         1 when /readyz would say ready
    rotator_sweep_errors_total{kind}                      a sweep that could not finish
    rotator_sweep_duration_seconds                        histogram, one sample per sweep
    rotator_notifications_attempted_total{sink}           delivery attempts
    rotator_notifications_failed_total{sink}              attempts that failed (retried)
    rotator_notifications_delivered_total{sink}           notifications delivered
    rotator_notifications_pending{sink}                   outbox rows not delivered yet

Every configured target has its ``completed`` and ``failures`` series at 0 from start
(``declare_targets``), so ``increase()`` sees the first failure (a series born at 1 shows
no increase); the reason-labelled counters are for dashboards, the rules alert on these.
Label values are target names, step names and status codes: never key material. Ages are
computed from timestamps when scraped, so they keep growing while the database is down.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from rotator import __version__
from rotator.adapters.clock import SYSTEM_CLOCK
from rotator.adapters.keyapi.session import CallRecord
from rotator.core.model import Rotation, Status

__all__ = ["SWEEP_ERROR_KINDS", "DaemonMetrics", "drop_created_series", "failure_reason"]

# What ``rotator_sweep_errors_total{kind}`` tells apart (``rotator.daemon.run``).
SWEEP_ERROR_KINDS = ("database", "internal")

_STEP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# A sweep is a few reads: milliseconds, and seconds only for a slow database or many targets.
_SWEEP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def drop_created_series() -> None:
    """Called once at daemon start-up: prometheus_client's switch is process-wide, so it is
    not flipped on import. It takes effect at the next scrape."""
    # The *_created samples double the page for no use here (rotator never resets a counter).
    disable_created_metrics()  # type: ignore[no-untyped-call]  # (prometheus_client leaves it untyped)


def failure_reason(rotation: Rotation, last_step: str) -> str:
    """A bounded label for why a rotation ended badly: the step where it went wrong.

    A rollback names the step whose action failed (create, verify or store), from its
    ``Failure``; "other" when no one action failed (the new key's secret was lost too
    often) or the row predates stored failure fields (it has the text only). A
    refusal ends the rotation at the step that refused (plan: the Vault key does not work).
    """
    if rotation.status is Status.ROLLED_BACK:
        failure = rotation.failure
        if failure is None or failure.step is None or not failure.code.names_step:
            return "other"
        return failure.step.value
    return last_step


class _Ages(Collector):
    """Seconds since each target's last success and its key's age, at scrape time."""

    def __init__(self, now: Callable[[], datetime]) -> None:
        self._now = now
        self._lock = threading.Lock()
        self._success: dict[str, datetime] = {}
        self._key_since: dict[str, datetime] = {}

    def set(self, target: str, last_completed: Rotation | None) -> None:
        """From the target's latest completed rotation (None: never rotated)."""
        last_success = None if last_completed is None else last_completed.finished_at
        key_since = None if last_completed is None else last_completed.key_stored_at
        with self._lock:
            for table, value in ((self._success, last_success), (self._key_since, key_since)):
                if value is None:
                    table.pop(target, None)
                else:
                    table[target] = value

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self._now()
        with self._lock:
            tables = (("rotator_seconds_since_last_success", self._success,
                       "Seconds since the target's last completed rotation"),
                      ("rotator_key_age_seconds", self._key_since,
                       "Seconds since the target's current key went into Vault"))
            for name, table, doc in tables:
                family = GaugeMetricFamily(name, doc, labels=["target"])
                for target, since in sorted(table.items()):
                    family.add_metric([target], max(0.0, (now - since).total_seconds()))
                yield family


class _PerTarget(Collector):
    """A series per target kept as a plain number in a dict, rendered at scrape time.

    A prometheus_client child is a metric object of its own with a lock and value
    objects, some 390 bytes: three families of them cost a daemon with 10,000 targets
    11 MiB. These are the families that every target has."""

    def __init__(self, name: str, doc: str, counter: bool) -> None:
        self._name, self._doc, self._counter = name, doc, counter
        self._lock = threading.Lock()
        self._values: dict[str, float] = {}

    def declare(self, target: str) -> None:
        with self._lock:
            self._values.setdefault(target, 0.0)

    def inc(self, target: str) -> None:
        with self._lock:
            self._values[target] = self._values.get(target, 0.0) + 1.0

    def set(self, target: str, value: float) -> None:
        with self._lock:
            self._values[target] = value

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        family: CounterMetricFamily | GaugeMetricFamily = (
            CounterMetricFamily(self._name, self._doc, labels=["target"]) if self._counter
            else GaugeMetricFamily(self._name, self._doc, labels=["target"]))
        with self._lock:
            for target, value in sorted(self._values.items()):
                family.add_metric([target], value)
        yield family


class DaemonMetrics:
    """Every metric the daemon exports; also the runner's ``RunObserver``."""

    def __init__(self, now: Callable[[], datetime] = SYSTEM_CLOCK.now) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.started = Counter("rotator_rotations_started", "Rotations started",
                               ["target", "trigger"], registry=r)
        self.completed = _PerTarget("rotator_rotations_completed", "Rotations completed",
                                    counter=True)
        self.failed = Counter("rotator_rotations_failed",
                              "Rotations refused before any change (status failed)",
                              ["target", "reason"], registry=r)
        self.rolled_back = Counter("rotator_rotations_rolled_back", "Rotations rolled back",
                                   ["target", "reason"], registry=r)
        self.failures = _PerTarget(
            "rotator_rotation_failures",
            "Rotations that ended failed or rolled back, whatever the reason", counter=True)
        self.step_seconds = Histogram("rotator_step_duration_seconds",
                                      "Time spent in one rotation action", ["step"],
                                      buckets=_STEP_BUCKETS, registry=r)
        self.provider_calls = Counter("rotator_provider_calls",
                                      "HTTP attempts to a key provider",
                                      ["provider", "call", "status"], registry=r)
        self.rate_limited = Counter("rotator_provider_rate_limited",
                                    "429 answers from a key provider", ["provider"], registry=r)
        self.retries = Counter("rotator_provider_retries",
                               "Provider attempts after the first one of a call",
                               ["provider", "call"], registry=r)
        self.in_flight = Gauge("rotator_rotations_in_flight",
                               "Rotations running (any replica), as of the last sweep",
                               registry=r)
        self.next_due = _PerTarget(
            "rotator_next_rotation_timestamp_seconds",
            "When the target's schedule next starts a rotation (Unix time)", counter=False)
        for per_target in (self.completed, self.failures, self.next_due):
            r.register(per_target)
        self.ready = Gauge("rotator_ready", "1 when database, schema and Vault are ready",
                           registry=r)
        self.sweep_errors = Counter("rotator_sweep_errors",
                                    "Sweeps for due work that failed (retried next wake)",
                                    ["kind"], registry=r)
        for kind in SWEEP_ERROR_KINDS:   # at 0 from start, for increase() (see above)
            self.sweep_errors.labels(kind=kind)
        self.sweep_seconds = Histogram("rotator_sweep_duration_seconds",
                                       "Time one sweep for due work took (failed ones too)",
                                       buckets=_SWEEP_BUCKETS, registry=r)
        notices = (("attempted", "Notification delivery attempts"),
                   ("failed", "Notification delivery attempts that failed (retried later)"),
                   ("delivered", "Notifications delivered"))
        self.notifications_attempted, self.notifications_failed, \
            self.notifications_delivered = (
                Counter(f"rotator_notifications_{name}", doc, ["sink"], registry=r)
                for name, doc in notices)
        self.notifications_pending = Gauge(
            "rotator_notifications_pending",
            "Notifications in the outbox not delivered yet (any replica's)", ["sink"],
            registry=r)
        build = Gauge("rotator_build_info", "The running rotator's version", ["version"],
                      registry=r)
        build.labels(version=__version__).set(1)
        self.ages = _Ages(now)
        r.register(self.ages)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def declare_targets(self, targets: Iterable[str]) -> None:
        """Each target's ``completed`` and ``failures`` series, at 0 until it first counts."""
        for target in targets:
            self.completed.declare(target)
            self.failures.declare(target)

    def declare_sinks(self, sinks: Iterable[str]) -> None:
        """Each sink's notification series, at 0 until it first counts."""
        for sink in sinks:
            for family in (self.notifications_attempted, self.notifications_failed,
                           self.notifications_delivered):
                family.labels(sink=sink)
            self.notifications_pending.labels(sink=sink).set(0)

    # --- the runner's RunObserver -------------------------------------------------------

    def rotation_started(self, rotation: Rotation) -> None:
        self.started.labels(target=rotation.target, trigger=rotation.trigger).inc()

    def step_done(self, rotation: Rotation, action: str, seconds: float) -> None:
        self.step_seconds.labels(step=action).observe(seconds)

    def rotation_finished(self, rotation: Rotation, last_step: str) -> None:
        if rotation.status is Status.COMPLETED:
            self.completed.inc(rotation.target)
            return
        self.failures.inc(rotation.target)
        if rotation.status is Status.ROLLED_BACK:
            self.rolled_back.labels(target=rotation.target,
                                    reason=failure_reason(rotation, last_step)).inc()
        else:
            self.failed.labels(target=rotation.target,
                               reason=failure_reason(rotation, last_step)).inc()

    # --- the Count adapter's on_call ----------------------------------------------------

    def provider_call(self, provider: str, record: CallRecord) -> None:
        status = "none" if record.status is None else str(record.status)
        self.provider_calls.labels(provider=provider, call=record.call, status=status).inc()
        if record.status == 429:
            self.rate_limited.labels(provider=provider).inc()
        if record.attempt > 1:
            self.retries.labels(provider=provider, call=record.call).inc()
