"""``rotator run`` as a process against real OpenBao, the emulator and SQLite/PostgreSQL:
schedules, health, metrics, shutdown, restart, readiness through outages, start-up refusals.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import platform
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from rotator.core.model import Status, Step
from rotator.daemon.claim import DAEMON_LEASE
from rotator.devtools.devvault import free_port
from tests.fixtures.openbao import OpenBao
from tests.integration.conftest import MakeWorld
from tests.integration.daemon_process import Daemon, daemon_config, metric, wait_for
from tests.integration.proxy import CuttableProxy
from tests.integration.world import World

pytestmark = pytest.mark.integration


def _completed(world: World, target: str) -> int:
    return sum(r.status is Status.COMPLETED for r in world.rotations(target))


def test_daemon_rotates_on_schedule_and_reports_it_in_metrics(make_world: MakeWorld) -> None:
    world = make_world("alpha", "beta", grace="200ms")
    config, port = daemon_config(world, "d1")
    daemon = Daemon(world, config, port)
    try:
        ready_after = daemon.wait_ready()
        assert ready_after < 15
        wait_for(lambda: all(_completed(world, n) == 1 for n in ("alpha", "beta")), 30,
                 "both first rotations")
        assert daemon.get("/healthz").status_code == 200
        ready = daemon.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"ready": True, "checks": {"database": "ok", "vault": "ok",
                                                          "replica": "ok"}}
        wait_for(lambda: metric(daemon.metrics(), "rotator_rotations_in_flight") == 0, 10,
                 "no rotation in flight")
        samples = daemon.metrics()
        for name in ("alpha", "beta"):
            assert metric(samples, "rotator_rotations_started_total", target=name,
                          trigger="first_rotation") == 1
            assert metric(samples, "rotator_rotations_completed_total", target=name) == 1
            assert 0 <= metric(samples, "rotator_seconds_since_last_success", target=name) < 60
            assert 0 <= metric(samples, "rotator_key_age_seconds", target=name) < 60
            # The next rotation is 30 days after this one started.
            started = world.rotations(name)[0].started_at.timestamp()
            assert metric(samples, "rotator_next_rotation_timestamp_seconds",
                          target=name) == pytest.approx(started + 30 * 86400, abs=0.01)
            world.assert_invariants(name)
        assert metric(samples, "rotator_provider_calls_total", provider="count",
                      call="create_key", status="201") == 2
        assert metric(samples, "rotator_provider_calls_total", provider="count",
                      call="delete_key", status="200") == 2
        assert metric(samples, "rotator_step_duration_seconds_count", step="verify") == 2
        assert metric(samples, "rotator_rotations_rolled_back_total", target="alpha",
                      reason="verify") == 0
        assert metric(samples, "rotator_ready") == 1
        # Nothing more is due: the daemon idles without starting anything.
        time.sleep(1.0)
        assert world.emulator.state.counters().creates == {
            world.accounts[n].account_id: 1 for n in ("alpha", "beta")}
        code, seconds = daemon.terminate()
        assert code == 0 and seconds < 5
    finally:
        daemon.close()
    logs = daemon.logs()
    assert '"event": "daemon_started"' in logs and '"event": "daemon_stopped"' in logs


def test_provider_faults_show_as_429s_retries_and_statuses(make_world: MakeWorld) -> None:
    names = ("a", "b", "c", "d")
    world = make_world(*names, grace="200ms")
    calm = world.emulator.settings
    world.emulator.settings = dataclasses.replace(calm, error_rate=0.2, rate_429=0.2,
                                                  rate_window=0.05, seed=11)
    # 12 attempts within 60 s (a random 429 asks for a whole second): a call fails for good
    # about once in 0.4**12, so every rotation must succeed.
    config, port = daemon_config(world, "d1", replace={
        "max_attempts = 6": "max_attempts = 12", 'max_elapsed = "5s"': 'max_elapsed = "60s"'})
    # No log flags: a daemon whose stderr is not a TTY logs JSON, at [logging] level info.
    daemon = Daemon(world, config, port, log_flags=False)
    try:
        daemon.wait_ready()
        wait_for(lambda: all(_completed(world, n) == 1 for n in names), 60,
                 "the rotations, through faults")
        samples = daemon.metrics()
        faults = world.emulator.state.counters().faults
        world.emulator.settings = calm
        assert daemon.terminate()[0] == 0
    finally:
        daemon.close()
    answered_429 = sum(v for (name, labels), v in samples.items()
                       if name == "rotator_provider_calls_total" and ("status", "429") in labels)
    answered_5xx = sum(v for (name, labels), v in samples.items()
                       if name == "rotator_provider_calls_total"
                       and dict(labels)["status"].startswith("5"))
    retries = sum(v for (name, _), v in samples.items()
                  if name == "rotator_provider_retries_total")
    assert answered_429 > 0 and answered_5xx > 0, faults
    assert metric(samples, "rotator_provider_rate_limited_total", provider="count") \
        == answered_429 == faults.get("rate_429", 0) + faults.get("rate_limited", 0)
    assert answered_5xx == faults.get("error_html", 0) + faults.get("error_json", 0)
    # A retry follows a failed attempt, and the emulator always answers: at most one
    # retry per fault (fewer only if a call ran out of its time budget).
    assert 0 < retries <= answered_429 + answered_5xx
    events = daemon.events()
    assert events and all("event" in e and "level" in e for e in events)
    assert {e["level"] for e in events} <= {"info", "warning", "error"}   # no debug lines
    for name in names:
        world.assert_invariants(name)


def test_sigterm_during_grace_exits_at_once_and_the_restart_revokes_on_time(
        make_world: MakeWorld) -> None:
    # Long enough for two daemon start-ups beside the suite's other workers on 2 cores.
    world = make_world("app", grace="8s")
    config, port = daemon_config(world, "d1")
    first = Daemon(world, config, port, name="first")
    try:
        first.wait_ready()
        wait_for(lambda: any(r.step is Step.GRACE for r in world.rotations("app")), 30,
                 "the rotation to reach its grace window")
        code, seconds = first.terminate()
    finally:
        first.close()
    assert code == 0 and seconds < 3, first.logs()[-3000:]
    (rot,) = world.rotations("app")
    assert rot.status is Status.RUNNING and rot.grace_ends_at is not None
    old_secret = world.accounts["app"].secret
    assert world.whoami(old_secret).status_code == 200      # consumers' old key still works
    second = Daemon(world, config, port, name="second")
    try:
        second.wait_ready()
        left = (rot.grace_ends_at - datetime.now(UTC)).total_seconds()
        assert left > 0.5, "the test was too slow to check the grace window from outside"
        time.sleep(left - 0.5)
        assert world.whoami(old_secret).status_code == 200  # not revoked early
        wait_for(lambda: _completed(world, "app") == 1, 15, "the resumed rotation")
    finally:
        second.terminate()
        second.close()
    (done,) = world.rotations("app")
    assert done.rotation_id == rot.rotation_id
    assert done.finished_at is not None
    late = (done.finished_at - rot.grace_ends_at).total_seconds()
    assert 0 <= late < 1.0, late                            # revoked on time, not later
    assert world.whoami(old_secret).status_code == 401
    world.assert_invariants("app")
    assert '"event": "rotation_resumed"' in second.logs()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_readyz_follows_vault_and_database_outages_and_recovers(
        make_world: MakeWorld, openbao: OpenBao, migrated_url: str) -> None:
    world = make_world("app", grace="200ms")
    pg_port = make_url(migrated_url).port or 5432
    vault_proxy = CuttableProxy(openbao.port)
    db_proxy = CuttableProxy(pg_port)
    config, port = daemon_config(world, "d1", replace={
        f'url = "{openbao.url}"': f'url = "{vault_proxy.url}"',
        f"@127.0.0.1:{pg_port}/": f"@127.0.0.1:{db_proxy.port}/"})
    daemon = Daemon(world, config, port)

    def readyz() -> dict[str, object]:
        response = daemon.get("/readyz")
        body = response.json()
        assert (response.status_code == 200) == body["ready"]
        return body  # type: ignore[no-any-return]

    try:
        daemon.wait_ready()
        wait_for(lambda: _completed(world, "app") == 1, 30, "the first rotation")
        vault_proxy.cut()
        wait_for(lambda: readyz()["checks"] == {  # type: ignore[comparison-overlap]
            "database": "ok", "vault": "unreachable, sealed or not authenticated",
            "replica": "ok"}, 15, "readyz to report Vault down")
        assert daemon.get("/healthz").status_code == 200    # down is not dead
        vault_proxy.restore()
        wait_for(lambda: readyz()["ready"] is True, 15, "readyz to recover from Vault")
        db_proxy.cut()
        wait_for(lambda: not readyz()["ready"] and readyz()["checks"]["vault"] == "ok"  # type: ignore[index]
                 and "unreachable" in readyz()["checks"]["database"], 30,  # type: ignore[index]
                 "readyz to report the database down")
        wait_for(lambda: metric(daemon.metrics(), "rotator_sweep_errors_total",
                                kind="database") >= 1, 30, "a failed sweep to be counted")
        assert daemon.proc.poll() is None and daemon.get("/healthz").status_code == 200
        db_proxy.restore()
        wait_for(lambda: readyz()["ready"] is True, 30, "readyz to recover from the database")
        assert daemon.proc.poll() is None
        code, _ = daemon.terminate()
        assert code == 0
    finally:
        daemon.close()
        vault_proxy.close()
        db_proxy.close()


def _claim_left(world: World) -> float:
    """Seconds until the SQLite claim lapses unless renewed (negative: lapsed or free)."""
    repo = world.repository()
    try:
        held = repo.lease_of(DAEMON_LEASE)
    finally:
        repo.engine.dispose()
    return (held[1] - datetime.now(UTC)).total_seconds() if held else -1.0


def _claim_waits(daemon: Daemon) -> list[dict[str, object]]:
    return [e for e in daemon.events() if str(e.get("event", "")).startswith("waiting_for")]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sqlite_refuses_a_second_replica_at_once_in_one_line(make_world: MakeWorld) -> None:
    world = make_world("app", grace="200ms")
    # A long claim: a daemon that waited for a live one would show it (it used to wait
    # lease_ttl + 2s, a line a second).
    slow = {'lease_ttl = "1s"': 'lease_ttl = "30s"'}
    config, port = daemon_config(world, "d1", replace=slow)
    first = Daemon(world, config, port, name="first")
    try:
        first.wait_ready()
        config2, port2 = daemon_config(world, "d2", replace=slow)
        second = Daemon(world, config2, port2, name="second", log_flags=False)
        assert second.wait(30) == 3
        took = time.monotonic() - second.started
        lines = [line for line in second.logs().splitlines() if line.strip()]
        assert took < 10, (took, lines)
        (refusal,) = [line for line in lines if "claim" in line or "SQLite" in line]
        assert lines[-1] == refusal, lines         # nothing after it: the process exits 3
        assert f"(pid {first.proc.pid} on host " in refusal
        assert world.db_url not in refusal                  # a config value is not echoed
        assert "renewed within the last 20s" in refusal
        assert "stop that daemon first, or run several replicas on PostgreSQL" in refusal
        assert first.proc.poll() is None and first.get("/readyz").status_code == 200
        assert first.terminate()[0] == 0
    finally:
        first.close()
    # Once the first one has stopped (and released its claim) a new one may start at once.
    third = Daemon(world, config, port, name="third")
    try:
        third.wait_ready()
        assert _claim_waits(third) == []
        assert third.terminate()[0] == 0
    finally:
        third.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sqlite_waits_once_for_a_killed_daemons_claim_then_takes_it(
        make_world: MakeWorld) -> None:
    world = make_world("app")
    slow = {'lease_ttl = "1s"': 'lease_ttl = "6s"'}
    config, port = daemon_config(world, "d1", replace=slow, schedule="enabled = false")
    first = Daemon(world, config, port, name="first")
    try:
        first.wait_ready()
    finally:
        first.kill()                   # SIGKILL: its claim is left to lapse
    config2, port2 = daemon_config(world, "d2", replace=slow, schedule="enabled = false")
    second = Daemon(world, config2, port2, name="second")
    try:
        # Its holder's pid is gone: stale at once, however recently it was renewed.
        wait_for(lambda: bool(_claim_waits(second)), 15, lambda: second.logs()[-2000:])
        waiting = second.get("/readyz")
        assert waiting.status_code == 503
        assert waiting.json()["checks"]["replica"].startswith("waiting for another daemon")
        second.wait_ready()
        (wait,) = _claim_waits(second)            # one line, not one per retry
        assert wait["event"] == "waiting_for_stale_sqlite_claim"
        assert wait["why"] == "its process is gone"
        assert f":{first.proc.pid}:" in str(wait["holder"])
        assert 0 < float(str(wait["wait_seconds"])) <= 6
        assert second.terminate()[0] == 0
    finally:
        second.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sqlite_waits_once_for_a_frozen_daemons_claim_then_takes_it(
        make_world: MakeWorld) -> None:
    world = make_world("app")
    # Renewed every 10s, stale at 10s left: the second daemon has those 10s to start up and
    # find it stale (5s of 15s was too short for a loaded machine).
    slow = {'lease_ttl = "1s"': 'lease_ttl = "30s"'}
    config, port = daemon_config(world, "d1", replace=slow, schedule="enabled = false")
    first = Daemon(world, config, port, name="first")
    second: Daemon | None = None
    try:
        first.wait_ready()
        first.freeze()                 # SIGSTOP: alive, but its claim is no longer renewed
        wait_for(lambda: _claim_left(world) < 9.9, 40, "the frozen daemon's claim to go stale")
        config2, port2 = daemon_config(world, "d2", replace=slow, schedule="enabled = false")
        second = Daemon(world, config2, port2, name="second")
        second.wait_ready()
        (wait,) = _claim_waits(second)
        assert wait["why"] == "it is no longer renewed", wait
        assert 0 < float(str(wait["wait_seconds"])) < 10
        mark = first.resume()
        assert first.wait(10) == 3     # thawed, it finds its claim taken and stops
        assert "sqlite_claim_lost" in first.logs(mark)
        assert second.terminate()[0] == 0
    finally:
        first.close()
        if second is not None:
            second.close()


def test_run_refuses_a_database_whose_schema_is_behind(
        emulator: object, openbao: OpenBao, vault_mount: str, database_url: str,
        tmp_path: Path) -> None:
    from tests.integration.world import build_world  # noqa: PLC0415

    world = build_world(emulator, openbao.url, openbao.root_token, vault_mount,  # type: ignore[arg-type]
                        database_url, tmp_path, ("app",))
    config, port = daemon_config(world, "d1")
    daemon = Daemon(world, config, port)
    try:
        assert daemon.wait(30) == 3
    finally:
        daemon.close()
    assert "rotator db upgrade" in daemon.logs()
    assert world.emulator.state.counters().creates == {}


def test_once_rotates_what_was_asked_waits_out_grace_and_exits(
        make_world: MakeWorld) -> None:
    world = make_world("asked", "other", grace="1s")
    config, port = daemon_config(world, "d1", schedule="enabled = false")
    start = time.monotonic()
    daemon = Daemon(world, config, port, "--once", "--rotate", "asked")
    try:
        assert daemon.wait(60) == 0, daemon.logs()[-3000:]
    finally:
        daemon.close()
    assert time.monotonic() - start >= 1.0                  # it waited out the grace
    assert _completed(world, "asked") == 1
    (rot,) = world.rotations("asked")
    assert rot.trigger == "run_rotate"      # not `rotator rotate`'s "manual"
    assert world.rotations("other") == []                 # schedules off: untouched
    assert world.whoami(world.accounts["asked"].secret).status_code == 401
    world.assert_invariants("asked")


def test_once_rotate_all_with_fewer_workers_than_targets(make_world: MakeWorld) -> None:
    names = ("a", "b", "c")
    world = make_world(*names, grace="300ms")
    config, port = daemon_config(world, "d1", workers=1, schedule="enabled = false")
    daemon = Daemon(world, config, port, "--once", "--rotate-all")
    try:
        assert daemon.wait(60) == 0, daemon.logs()[-3000:]
    finally:
        daemon.close()
    for name in names:
        assert [r.trigger for r in world.rotations(name)] == ["run_rotate"]
        assert _completed(world, name) == 1
        world.assert_invariants(name)


def test_once_exits_1_when_a_rotation_rolls_back(make_world: MakeWorld) -> None:
    world = make_world("app", grace="200ms", probe_timeout="300ms")
    world.emulator.settings = dataclasses.replace(world.emulator.settings,
                                                  propagation_delay=5.0)
    config, port = daemon_config(world, "d1")
    daemon = Daemon(world, config, port, "--once")
    try:
        assert daemon.wait(60) == 1
    finally:
        daemon.close()
    (rot,) = world.rotations("app")
    assert rot.status is Status.ROLLED_BACK
    world.assert_invariants("app")


def test_a_listen_address_in_use_is_a_config_error(make_world: MakeWorld) -> None:
    import socket  # noqa: PLC0415

    world = make_world("app")
    busy = socket.create_server(("127.0.0.1", free_port()))
    try:
        config, _ = daemon_config(world, "d1")
        taken = busy.getsockname()[1]
        text = config.read_text()
        config.write_text(text.replace('listen = "127.0.0.1:', f'listen = "127.0.0.1:{taken}"\n#'))
        daemon = Daemon(world, config, taken)
        try:
            assert daemon.wait(30) == 2
        finally:
            daemon.close()
    finally:
        busy.close()
    assert "daemon.listen" in daemon.logs()


def _thread_ids(pid: int) -> list[int]:
    return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]


def test_sigterm_delivered_to_a_worker_thread_still_stops_the_daemon(
        make_world: MakeWorld) -> None:
    # The kernel may hand a process's SIGTERM to any of its threads; Python then runs the
    # handler only when the main thread wakes. tgkill sends it to one that is not main.
    world = make_world("app")
    daemon = Daemon(world, *daemon_config(world, "daemon", schedule="enabled = false"))
    try:
        daemon.wait_ready()
        pid = daemon.proc.pid
        others = [tid for tid in _thread_ids(pid) if tid != pid]
        assert others, "the daemon runs more than its main thread"
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.syscall(_SYS_TGKILL, pid, others[0], signal.SIGTERM) == 0
        code, took = daemon.terminate_after_signal(timeout=10)
        assert code == 0 and took < 5, (code, took, daemon.logs()[-2000:])
    finally:
        daemon.close()


_SYS_TGKILL = {"x86_64": 234, "aarch64": 131}[platform.machine()]
