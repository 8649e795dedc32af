"""Notifications end to end: ``rotator run`` as a process, real OpenBao, the emulator,
SQLite and PostgreSQL, and a real HTTP receiver that is down for a while; a daemon
SIGKILLed with deliveries pending delivers them after its restart. None is lost."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from rotator.adapters.sql.outbox import OutboxRow
from rotator.adapters.sql.tables import notification_outbox
from rotator.emulator import EmulatorSettings
from tests.integration.conftest import MakeWorld
from tests.integration.daemon_process import Daemon, daemon_config, metric, wait_for
from tests.integration.receiver import Receiver
from tests.integration.test_revoked_probe import surviving_old_key
from tests.integration.world import World

pytestmark = pytest.mark.integration

HMAC_KEY = "it-webhook-hmac-5f0c2d9e7b"
SLACK_TOKEN = "slacktoken0a1b2c3d4e"

NOTIFY = """
[notifications]
dispatch_interval = "200ms"

[notifications.sinks.ops]
type = "webhook"
url = "{hook}"
secret_env = "IT_WEBHOOK_SECRET"
timeout = "2s"
backoff = "200ms"
max_backoff = "1s"

[notifications.sinks.chat]
type = "slack"
url_file = "{slack_file}"
events = ["rotation_rolled_back", "rotation_failed"]
timeout = "2s"
backoff = "200ms"
max_backoff = "1s"
"""


def _config(world: World, receiver: Receiver, name: str) -> tuple[Path, int]:
    path, port = daemon_config(world, name)
    slack_file = path.with_name("slack-url")
    slack_file.write_text(receiver.url(f"/slack/T0/B0/{SLACK_TOKEN}"))
    path.write_text(path.read_text() + NOTIFY.format(hook=receiver.url("/hook"),
                                                     slack_file=slack_file))
    return path, port


def _daemon(world: World, config: Path, port: int, name: str) -> Daemon:
    return Daemon(world, config, port, name=name, env={"IT_WEBHOOK_SECRET": HMAC_KEY})


def _rows(world: World) -> list[OutboxRow]:
    repo = world.repository()
    try:
        return repo.outbox.rows()
    finally:
        repo.engine.dispose()


def _stored_notices(world: World) -> list[str]:
    repo = world.repository()
    try:
        with repo.engine.connect() as conn:
            return list(conn.execute(select(notification_outbox.c.notice)
                                     .order_by(notification_outbox.c.id)).scalars())
    finally:
        repo.engine.dispose()


def _secrets(world: World) -> list[str]:
    return [*world.emulator.state.issued_secrets(), HMAC_KEY, SLACK_TOKEN]


def _assert_no_secret(world: World, *texts: str) -> None:
    for secret in _secrets(world):
        for text in texts:
            assert secret not in text


def test_a_failed_rotation_reaches_the_receiver_signed_once_it_comes_back(
        make_world: MakeWorld) -> None:
    world = make_world("app", probe_timeout="600ms")
    world.emulator.settings = EmulatorSettings(propagation_delay=30)  # never authenticates
    receiver = Receiver()            # down: nothing listens on its port yet
    config, port = _config(world, receiver, "d1")
    daemon = _daemon(world, config, port, "d1")
    try:
        daemon.wait_ready()
        wait_for(lambda: metric(daemon.metrics(), "rotator_notifications_failed_total",
                                sink="ops") >= 2, 30, "two failed attempts while it is down")
        waiting = {r.sink: r for r in _rows(world)}
        assert waiting["ops"].delivered_at is None and waiting["ops"].attempts >= 2
        assert waiting["ops"].last_error == "could not reach the receiver (ConnectError)"
        assert metric(daemon.metrics(), "rotator_notifications_pending", sink="ops") == 1
        receiver.up()
        wait_for(lambda: all(r.delivered_at is not None for r in _rows(world)), 30,
                 lambda: f"delivery after the receiver came back:\n{daemon.logs()[-3000:]}")
        wait_for(lambda: metric(daemon.metrics(), "rotator_notifications_pending",
                                sink="ops") == 0, 10, "the pending gauge to drop")
        samples = daemon.metrics()
        assert daemon.terminate()[0] == 0
    finally:
        daemon.close()
        receiver.down()
    (hook,) = receiver.got("/hook")
    assert hook.signed_with(HMAC_KEY)
    body = hook.json()
    (rotation,) = world.rotations("app")
    assert (body["event"], body["target"], body["rotation_id"]) == (
        "rotation_rolled_back", "app", rotation.rotation_id)
    assert body["details"]["step"] == "verify"
    assert body["delivery_id"] == hook.headers["x-rotator-delivery"] == waiting["ops"].delivery_id
    (slack,) = receiver.got(f"/slack/T0/B0/{SLACK_TOKEN}")
    assert slack.json()["text"].startswith("[rotator] rotation of app rolled_back")
    attempted = metric(samples, "rotator_notifications_attempted_total", sink="ops")
    failed = metric(samples, "rotator_notifications_failed_total", sink="ops")
    assert attempted == failed + 1 and metric(
        samples, "rotator_notifications_delivered_total", sink="ops") == 1
    _assert_no_secret(world, hook.body.decode(), slack.body.decode(), daemon.logs(),
                      *(r.last_error or "" for r in _rows(world)))
    print(f"\nnotifications (receiver down, then up): attempted={attempted:g} "
          f"failed={failed:g} delivered=1 lost=0")


def test_a_daemon_killed_with_deliveries_pending_delivers_them_after_its_restart(
        make_world: MakeWorld) -> None:
    names = ("a", "b", "c")
    world = make_world(*names, probe_timeout="600ms")
    world.emulator.settings = EmulatorSettings(propagation_delay=30)
    receiver = Receiver()
    config, port = _config(world, receiver, "d1")
    first = _daemon(world, config, port, "first")
    try:
        first.wait_ready()
        # Each target's rollback, for both sinks, tried at least once and not delivered.
        wait_for(lambda: len(rows := _rows(world)) == 2 * len(names)
                 and all(r.attempts >= 1 for r in rows), 30,
                 lambda: f"six deliveries pending:\n{first.logs()[-3000:]}")
    finally:
        first.kill()                   # SIGKILL: no chance to finish anything
    pending = {r.delivery_id for r in _rows(world) if r.delivered_at is None}
    assert len(pending) == 2 * len(names)
    receiver.up()
    second = _daemon(world, config, port, "second")
    try:
        second.wait_ready()
        wait_for(lambda: all(r.delivered_at is not None for r in _rows(world)), 30,
                 lambda: f"the deliveries after the restart:\n{second.logs()[-3000:]}")
        samples = second.metrics()
        assert second.terminate()[0] == 0
    finally:
        second.close()
        receiver.down()
    received = receiver.got()
    ids = receiver.delivery_ids()
    lost = pending - ids
    assert lost == set() and ids == pending
    assert all(r.signed_with(HMAC_KEY) for r in receiver.got("/hook"))
    assert {r.json()["target"] for r in receiver.got("/hook")} == set(names)
    rows = _rows(world)
    attempts = sum(r.attempts for r in rows)
    assert all(r.attempts >= 2 for r in rows)      # failed before the kill, delivered after
    _assert_no_secret(world, *(r.body.decode() for r in received), first.logs(),
                      second.logs())
    assert metric(samples, "rotator_notifications_pending", sink="ops") == 0
    print(f"\nnotifications (SIGKILL with {len(pending)} pending): attempted={attempts} "
          f"received={len(received)} distinct={len(ids)} lost={len(lost)}")


def test_a_stray_key_verify_finds_is_enqueued_once(make_world: MakeWorld) -> None:
    world = make_world("app")
    receiver = Receiver()
    config, _port = _config(world, receiver, "d1")
    world.config_path.write_text(config.read_text())
    stray = world.emulator.state.create_key(world.accounts["app"].account_id, "forgotten")
    for _ in range(2):                   # found twice, told once
        code, out = world.cli_here("verify")
        assert code == 1 and stray.key_id in out
    (row,) = _rows(world)               # the chat sink takes rollbacks only
    assert (row.sink, row.event, row.dedupe_key, row.delivered_at) == (
        "ops", "stray_key", f"stray_key:app:{stray.key_id}", None)


def test_a_stray_key_reconcile_finds_or_deletes_is_one_notice_with_verify_s(
        make_world: MakeWorld) -> None:
    world = make_world("app")
    receiver = Receiver()
    config, _port = _config(world, receiver, "d1")
    world.config_path.write_text(config.read_text())
    stray = world.emulator.state.create_key(world.accounts["app"].account_id, "forgotten")
    found = world.cli_in_process("reconcile")
    assert found.returncode == 1 and stray.key_id in found.stdout
    (row,) = _rows(world)
    assert (row.sink, row.event, row.dedupe_key) == (
        "ops", "stray_key", f"stray_key:app:{stray.key_id}")
    (stored,) = _stored_notices(world)
    assert json.loads(stored)["details"]["detail"] == "reconcile: found"
    assert world.cli_here("verify")[0] == 1              # the same key: no second notice
    assert world.cli_in_process("reconcile", "--fix").returncode == 0
    assert [r.dedupe_key for r in _rows(world)] == [row.dedupe_key]
    _assert_no_secret(world, *_stored_notices(world))


def test_run_once_delivers_what_its_failed_rotation_enqueued_before_it_exits(
        make_world: MakeWorld) -> None:
    world = make_world("app", probe_timeout="600ms")
    world.emulator.settings = EmulatorSettings(propagation_delay=30)
    receiver = Receiver()
    receiver.up()
    config, _port = _config(world, receiver, "once")
    world.config_path.write_text(config.read_text())
    try:
        done = world.cli("run", "--once", env={"IT_WEBHOOK_SECRET": HMAC_KEY})
    finally:
        receiver.down()
    assert done.returncode == 1, done.stderr[-3000:]          # the rotation rolled back
    (hook,) = receiver.got("/hook")
    assert hook.signed_with(HMAC_KEY) and hook.json()["event"] == "rotation_rolled_back"
    assert all(r.delivered_at is not None for r in _rows(world))


def test_a_shell_s_rotate_enqueues_revoked_key_alive_and_a_dropped_sink_s_rows_are_warned_of(
        make_world: MakeWorld) -> None:
    world = make_world("app", grace="0s")
    old_key = surviving_old_key(world)
    without_sinks = world.config_path.read_text()
    config, _port = _config(world, Receiver(), "shell")
    world.config_path.write_text(config.read_text())
    code, _out = world.cli_here("rotate", "app")
    assert code == 0                                  # the delete itself succeeded
    (rotation,) = world.rotations("app")
    (row,) = _rows(world)                             # the chat sink takes rollbacks only
    assert (row.sink, row.event, row.dedupe_key, row.delivered_at) == (
        "ops", "revoked_key_alive", f"revoked_key_alive:{rotation.rotation_id}:{old_key}",
        None)
    # The sink taken out of the config: its notice is never sent, and the daemon says so.
    world.config_path.write_text(without_sinks)
    done = world.cli("run", "--once")
    assert done.returncode == 0, done.stderr[-3000:]
    said = [json.loads(line) for line in done.stderr.splitlines()
            if '"notifications_unsendable"' in line]
    assert [(e["sink"], e["pending"], e["level"]) for e in said] == [("ops", 1, "warning")]
    assert _rows(world)[0].delivered_at is None


def test_a_blocked_rollback_reaches_the_receiver_then_its_rotation_is_told_stuck(
        make_world: MakeWorld) -> None:
    """A rotation whose rollback cannot tell which key Vault serves (its secret deleted
    while the new key was being probed) blocks, and sits in its rollback step: both are
    told, each once (stuck once per step), signed, to a real receiver, and the key the
    rollback would delete is kept."""
    world = make_world("app", probe_timeout="4s")
    world.emulator.settings = EmulatorSettings(propagation_delay=30)  # never authenticates
    receiver = Receiver()
    receiver.up()
    config, port = _config(world, receiver, "d1")
    config.write_text(config.read_text().replace(
        'dispatch_interval = "200ms"', 'dispatch_interval = "200ms"\nstuck_after = "1s"'))
    daemon = _daemon(world, config, port, "d1")
    try:
        daemon.wait_ready()
        wait_for(lambda: [r.step.value for r in world.rotations("app")] == ["verify"], 30,
                 "the rotation to probe its new key")
        client = world.vault()
        try:   # gone under the probe: the rollback can no longer tell what Vault serves
            client.secrets.kv.v2.delete_metadata_and_all_versions(
                path="count/app", mount_point=world.mount)
        finally:
            client.adapter.close()
        wait_for(lambda: {"rollback_blocked", "rotation_stuck"}
                 <= {r.json()["event"] for r in receiver.got("/hook")}, 30,
                 lambda: f"both notices:\n{daemon.logs()[-3000:]}")
        time.sleep(1.0)                  # more sweeps: each condition is still told once
        assert daemon.terminate()[0] == 0
    finally:
        daemon.close()
        receiver.down()
    (rotation,) = world.rotations("app")
    assert rotation.status.value == "running" and rotation.step.value == "rollback"
    assert rotation.new_key_id in world.live_key_ids("app")     # never deleted, blocked
    hooks = receiver.got("/hook")
    # Stuck is told once per step: the probe outlasted stuck_after (4 s against 1 s), then
    # the rollback did. The blocked rollback names the step that failed.
    told = sorted((h.json()["event"], h.json()["details"].get("step")) for h in hooks)
    assert told == [("rollback_blocked", "verify"), ("rotation_stuck", "rollback"),
                    ("rotation_stuck", "verify")], told
    blocked = next(h.json() for h in hooks if h.json()["event"] == "rollback_blocked")
    assert "cannot tell which key Vault serves" in blocked["details"]["blocked"]
    assert all(h.signed_with(HMAC_KEY) for h in hooks)
    assert {h.json()["rotation_id"] for h in hooks} == {rotation.rotation_id}
    _assert_no_secret(world, *(h.body.decode() for h in hooks), daemon.logs())
