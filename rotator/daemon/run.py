"""``rotator run``: the daemon process from start-up checks to a clean exit.

Start-up refuses an old schema (exit 3) and, on SQLite, a second replica (exit 3). An
unreachable database or Vault does not stop it: it stays up, not ready, and retries on
every wake-up. SIGTERM/SIGINT stop the wake-ups, let each running step finish (the runner
parks its rotation at the next step boundary), release the leases and exit 0, all within
``daemon.shutdown_timeout``. ``--once`` runs everything due or asked for, as many at a time as
there are workers (waiting for a free one rather than leaving a target to a next sweep),
waits out the grace windows of what it started, and exits 0; 1 if anything failed or a
signal stopped it first (what was in flight resumes on the next run).
"""

from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from types import FrameType

import structlog
from sqlalchemy.exc import SQLAlchemyError

from rotator.adapters.clock import SystemClock
from rotator.adapters.sql.backend import is_sqlite
from rotator.adapters.sql.schema import check_schema
from rotator.app.notify import build_sinks
from rotator.app.operations import holder_id, renew_vault_token
from rotator.app.orphans import Configured, orphans
from rotator.app.runtime import Runtime, build_runtime
from rotator.config.model import Config
from rotator.core.errors import ConfigError, SchemaError
from rotator.core.model import Status
from rotator.daemon.claim import DAEMON_LEASE, take_sqlite_claim
from rotator.daemon.dispatcher import Dispatcher, SinkPolicy
from rotator.daemon.http import HealthServer
from rotator.daemon.metrics import DaemonMetrics, drop_created_series
from rotator.daemon.readiness import Readiness
from rotator.daemon.sweep import Outcome, Sweeper
from rotator.daemon.waker import Waker, quiet_scheduler_logs
from rotator.daemon.watch import Thresholds, Watch
from rotator.daemon.workers import LeaseHeartbeat, WorkerPool
from rotator.engine.runner import Runner

__all__ = ["DAEMON_LEASE", "RunOptions", "run_daemon"]

log = structlog.get_logger("rotator.daemon")

_MAIN_WAKE_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class RunOptions:
    rotate: tuple[str, ...] = ()
    once: bool = False
    actor: str = "cli"


class _Daemon:
    def __init__(self, config: Config, opts: RunOptions, stop: threading.Event) -> None:
        self.config, self.opts, self.stop = config, opts, stop
        self.exit_code = 0
        clock = SystemClock()
        self.metrics = DaemonMetrics(now=clock.now)
        self.metrics.declare_targets(config.targets)
        self.rt: Runtime = build_runtime(config, require_schema=False,
                                         on_call=self.metrics.provider_call, clock=clock)
        self.holder = holder_id()
        self.schema_ok = False
        self._renewed_at = -math.inf
        lease_ttl = config.defaults.lease_ttl
        self.runner = Runner(providers=self.rt.providers, store=self.rt.store, repo=self.rt.repo,
                             clock=self.rt.clock, holder=self.holder, lease_ttl=lease_ttl,
                             call_deadline=config.call_deadline(),
                             heartbeat=lambda: renew_vault_token(self.rt),
                             observer=self.metrics, stopping=stop.is_set)
        self.waker = Waker(self.tick, config.daemon.poll_interval, now=self.rt.clock.now)
        self.dispatcher = self._dispatcher()
        self.pool = WorkerPool(config.daemon.workers, on_done=self._work_done)
        notifications = config.notifications
        watch = Watch(self.rt.repo.outbox.enqueue,
                      Thresholds(notifications.stuck_after, notifications.overdue_after))
        self.sweeper = Sweeper(
            repo=self.rt.repo, runner=self.runner, pool=self.pool, clock=self.rt.clock,
            metrics=self.metrics, specs=self.rt.spec, actor=opts.actor,
            schedules={name: config.schedule_for(name) for name in config.targets},
            wake_at=self.waker.wake_at, anchor=self.log_chain_head,
            wait_for_workers=opts.once, stopping=stop.is_set, watch=watch,
            orphans=partial(orphans, self.rt.repo, Configured.of(config)),
            orphan_spec=self.rt.orphan_spec)
        extra = (DAEMON_LEASE,) if self.single_replica else ()
        self.heartbeat = LeaseHeartbeat(self.rt.repo, self.rt.clock, self.holder, lease_ttl,
                                        lambda: (*self.pool.busy(), *extra),
                                        on_lost=self._lease_not_renewed)
        self.claimed = False
        self.readiness = Readiness(self.rt.engine, self.rt.store.is_ready,
                                   more={"replica": self._claim_check})

    def _dispatcher(self) -> Dispatcher:
        notifications = self.config.notifications
        try:
            sinks = build_sinks(self.config)
        except BaseException:
            self.rt.close()
            raise
        policies = {name: SinkPolicy(sink.timeout, sink.backoff, sink.max_backoff)
                    for name, sink in notifications.sinks.items()}
        return Dispatcher(self.rt.repo.outbox, sinks, policies, holder=self.holder,
                          clock=self.rt.clock, metrics=self.metrics,
                          interval=notifications.dispatch_interval)

    def _work_done(self) -> None:
        """A piece of work ended: sweep again, and deliver what it may have enqueued."""
        self.waker.wake_now()
        self.dispatcher.wake()

    def log_chain_head(self, target: str) -> None:
        """Log the head of ``target``'s audit chain: an anchor kept outside the database,
        against which a deleted tail (which the chain alone cannot show) is found."""
        try:
            head = self.rt.repo.chain_head(target)
        except SQLAlchemyError as exc:
            log.warning("audit_chain_head_unread", target=target, error=type(exc).__name__)
            return
        if head is not None:
            log.info("audit_chain_head", target=target, event_id=head.id,
                     chain_seq=head.chain_seq, chain_hash=head.chain_hash)

    @property
    def single_replica(self) -> bool:
        return is_sqlite(self.rt.engine)

    # --- start-up ------------------------------------------------------------------------

    def check_schema(self) -> None:
        """``SchemaError`` if the schema is not this code's; unreachable is retried later."""
        try:
            check_schema(self.rt.engine)
        except SQLAlchemyError as exc:
            log.error("database_unreachable", error=type(exc).__name__)
            return
        self.schema_ok = True

    def claim_sqlite(self) -> bool:
        """On SQLite, take the one-replica claim (``daemon.claim``); ``False`` if stopped
        while waiting for a stale one; ``LeaseHeld`` (exit 3) if a live daemon holds it."""
        if self.single_replica and not take_sqlite_claim(
                self.rt.repo, self.rt.clock, self.holder, self.config.defaults.lease_ttl,
                self.stop):
            return False
        self.claimed = True
        return True

    def _lease_not_renewed(self, target: str) -> None:
        """A lease the heartbeat could not renew: only the SQLite claim's loss stops us.

        (A busy target's lease may not be taken yet; the runner finds out about its own.)
        Another daemon took the claim while this one was frozen or cut off: its workers
        are refused at their next write anyway; it stops rather than compete (exit 3).
        """
        if target != DAEMON_LEASE or not self.claimed:
            return
        log.error("sqlite_claim_lost", detail="another daemon took this SQLite database "
                  "over while this one was not renewing its claim; stopping")
        self.claimed = False
        self.exit_code = 3
        self.stop.set()

    def _claim_check(self) -> str:
        return "ok" if self.claimed else "waiting for another daemon's claim on SQLite"

    # --- the wake-up loop ----------------------------------------------------------------

    def tick(self, only: set[str] | None = None) -> datetime | None:
        poll = timedelta(seconds=self.config.daemon.poll_interval)
        if not self.schema_ok:
            try:
                self.check_schema()
            except SchemaError as exc:
                log.error("schema_not_current", error=exc.message)
                self.exit_code = 3
                self.stop.set()
                return None
            if not self.schema_ok:
                return None
        self._renew_token_if_due()
        try:
            with self.metrics.sweep_seconds.time():
                return self.sweeper.sweep(only)
        except SQLAlchemyError as exc:
            self.metrics.sweep_errors.labels(kind="database").inc()
            log.warning("sweep_failed", error=type(exc).__name__,
                        retry_in=poll.total_seconds())
        except Exception:
            self.metrics.sweep_errors.labels(kind="internal").inc()
            log.exception("sweep_failed")
        return None

    def _renew_token_if_due(self) -> None:
        # Once per poll interval, not on every sweep: a burst of finished rotations wakes
        # the loop many times, and each renewal is a Vault round trip (retried when down).
        now = time.monotonic()
        if now - self._renewed_at >= self.config.daemon.poll_interval:
            self._renewed_at = now
            renew_vault_token(self.rt)

    def alive(self) -> bool:
        limit = max(3 * self.config.daemon.poll_interval, 120.0)
        return not self.waker.stalled(limit)

    # --- the two modes -------------------------------------------------------------------

    def serve(self) -> None:
        daemon_cfg = self.config.daemon
        try:
            server = HealthServer(daemon_cfg.host, daemon_cfg.port, alive=self.alive,
                                  readiness=self.readiness, metrics=self.metrics)
        except OSError as exc:
            raise ConfigError(f"daemon.listen: cannot listen on {daemon_cfg.listen}: "
                              f"{exc.strerror}", key="daemon.listen") from None
        server.start()
        try:
            claimed = self.claim_sqlite()
        finally:
            if not self.claimed:
                server.stop()
        if not claimed:
            self.rt.close()
            return
        self.heartbeat.start()
        self.dispatcher.start()
        self.waker.start()
        log.info("daemon_started", listen=f"{daemon_cfg.host}:{server.port}",
                 holder=self.holder, targets=len(self.config.targets),
                 replicas="one (sqlite)" if self.single_replica else "many (postgresql)")
        try:
            # Never an untimed wait: the kernel may hand SIGTERM to any thread, and then
            # Python runs its handler only once the main thread wakes (a blocked wait of
            # the main thread is not interrupted), so it wakes at least once a second.
            while not self.stop.wait(_MAIN_WAKE_SECONDS):
                pass
        finally:
            self.waker.shutdown()
            self.drain()
            server.stop()

    def once(self) -> None:
        if not self.claim_sqlite():
            self.rt.close()
            self._interrupted()
            return
        self.heartbeat.start()
        self.dispatcher.start()
        only: set[str] | None = None
        finished = False
        while not self.stop.is_set():
            wake = self.tick(only)
            if not self._wait_idle() or self.stop.is_set():
                break   # a rotation parked by the stop is not "unsettled": see below
            if self.sweeper.sweeps:
                # What the first whole sweep found due is this run's work; later sweeps
                # finish it (grace windows, resumed steps) and start nothing else.
                only = set(self.sweeper.touched)
            if any(not outcome.settled for outcome in self._latest().values()):
                log.error("once_unsettled", detail="a rotation could not move on; see status")
                finished = True
                break
            if only is None:
                # No whole sweep yet (the database is unreachable): again at the next poll,
                # as the daemon would; "nothing due" is not known yet.
                self._sleep(self.config.daemon.poll_interval)
                continue
            waiting = [r for r in self.rt.repo.all_running() if r.target in only]
            if not waiting and not self.sweeper.manual_pending():
                finished = True
                break
            if self.sweeper.manual_pending():
                # Asked for, but another process holds the target: look again soon.
                self._sleep(0.2)
                continue
            deadlines = [r.grace_ends_at for r in waiting if r.grace_ends_at is not None]
            if wake is not None:
                deadlines.append(wake)
            now = self.rt.clock.now()
            until = min(deadlines, default=now + timedelta(seconds=1))
            self._sleep(max(0.05, (until - now).total_seconds() + 0.02))
        self.drain()
        if not finished:
            self._interrupted()
        if self.exit_code == 0 and not all(_succeeded(o) for o in self._latest().values()):
            self.exit_code = 1

    def _interrupted(self) -> None:
        """A signal stopped ``--once`` before its work was done: exit 1 (unless an earlier
        cause already set the code), so a Job does not count the run as a success."""
        if self.exit_code == 0:
            log.error("once_interrupted", detail="stopped before all that was due was done; "
                      "the next run resumes the rotations in flight and starts the rest")
            self.exit_code = 1

    def _wait_idle(self) -> bool:
        """Wait until no worker runs; ``False`` if stopped first (``drain`` takes over)."""
        while not self.pool.join(_MAIN_WAKE_SECONDS):
            if self.stop.is_set():
                return False
        return True

    def _sleep(self, seconds: float) -> None:
        """Wait ``seconds`` or until stopped, waking each second (see ``serve``)."""
        end = time.monotonic() + seconds
        while not self.stop.is_set() and (left := end - time.monotonic()) > 0:
            self.stop.wait(min(left, _MAIN_WAKE_SECONDS))

    def _latest(self) -> dict[str, Outcome]:
        return self.sweeper.latest_outcomes()

    def drain(self) -> None:
        """Let running steps finish (bounded), then give back every lease we hold."""
        deadline = self.config.daemon.shutdown_timeout
        if not self.pool.join(deadline):
            log.error("shutdown_deadline_passed", busy=sorted(self.pool.busy()),
                      detail="their leases lapse on their own; the next start resumes them")
            return
        self._stop_dispatcher()
        self.heartbeat.stop()
        if self.single_replica:
            try:
                self.rt.repo.release_lease(DAEMON_LEASE, self.holder)
            except SQLAlchemyError as exc:
                log.warning("release_failed", error=type(exc).__name__)
        self.rt.close()

    def _stop_dispatcher(self) -> None:
        """Stop delivering, after the attempt in progress (bounded by its sink's timeout).
        ``--once`` first makes one attempt at what is due (a notice its work enqueued
        would otherwise wait for the next run); what is left stays in the outbox."""
        if self.opts.once and self.config.notifications.sinks and self.schema_ok:
            try:
                self.dispatcher.dispatch()
            except SQLAlchemyError as exc:
                log.warning("notify_dispatch_failed", error=type(exc).__name__)
        self.dispatcher.stop(self.config.daemon.shutdown_timeout)
        self.dispatcher.close()


def _succeeded(outcome: Outcome) -> bool:
    """Completed, or nothing to do (a cleanup, a target another replica had)."""
    rotation = outcome.rotation
    if outcome.error is not None:
        return False
    return rotation is None or rotation.status is Status.COMPLETED


def run_daemon(config: Config, opts: RunOptions, stop: threading.Event | None = None) -> int:
    """Run until stopped (or, with ``--once``, until done); the process exit code."""
    quiet_scheduler_logs()
    drop_created_series()
    stop = stop or threading.Event()
    daemon = _Daemon(config, opts, stop)
    _install_signal_handlers(stop)
    daemon.sweeper.request(opts.rotate)
    try:
        daemon.check_schema()
        if opts.once:
            daemon.once()
        else:
            daemon.serve()
    except BaseException:
        daemon.rt.close()
        raise
    log.info("daemon_stopped", exit_code=daemon.exit_code)
    return daemon.exit_code


def _install_signal_handlers(stop: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # an embedded daemon (tests) is stopped through ``stop`` instead

    def handle(signum: int, _frame: FrameType | None) -> None:
        log.info("shutdown_requested", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
