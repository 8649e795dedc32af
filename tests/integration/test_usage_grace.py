"""Usage-aware grace against the real emulator, OpenBao and SQL (SQLite and PostgreSQL).

A consumer keeps calling Count with the old key after the rotation stored the new one.
``rotate`` holds the old key past its grace window while the emulator reports it used,
and revokes it only once it has been quiet for ``quiet_period``; a consumer that never
stops gets it revoked at ``max_grace``, by a daemon whose poll is a minute long, so the
look at each held deadline is its timer's, not a poll's; that revocation reaches a real
webhook receiver as a signed ``max_grace_reached`` notice.
"""

from __future__ import annotations

import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import httpx
import pytest

from rotator.core.model import Status
from rotator.core.vocabulary import AuditAction, AuditResult, EventKind
from tests.integration.conftest import MakeWorld
from tests.integration.daemon_process import Daemon, daemon_config, wait_for
from tests.integration.receiver import Receiver
from tests.integration.world import World

pytestmark = pytest.mark.integration

HOOK_SECRET = "it-grace-hook-hmac-7d41c0"
HOOK = """
[notifications]
dispatch_interval = "200ms"

[notifications.sinks.ops]
type = "webhook"
url = "{url}"
secret_env = "IT_GRACE_HOOK_SECRET"
events = ["max_grace_reached"]
timeout = "2s"
backoff = "200ms"
"""


class Consumer:
    """Calls ``whoami`` with one key every 50 ms on a thread, until stopped."""

    def __init__(self, world: World, secret: str) -> None:
        self._url = f"{world.emulator.url}/v1/whoami"
        self._secret = secret
        self._stop = threading.Event()
        self.failures_while_used = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {self._secret}"},
                          timeout=5) as client:
            while not self._stop.is_set():
                if client.get(self._url).status_code != 200:
                    self.failures_while_used += 1
                self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _usage_grace_world(make_world: MakeWorld, quiet: str, max_grace: str) -> World:
    """One target ``app`` with a 1 s grace window and usage-aware grace."""
    world = make_world("app", grace="1s")
    text = world.config_path.read_text()
    line = 'grace = "1s"\n'
    assert line in text
    world.config_path.write_text(text.replace(
        line, f'{line}quiet_period = "{quiet}"\nmax_grace = "{max_grace}"\n', 1))
    return world


def _notes(world: World, action: AuditAction) -> list[tuple[str | None, datetime]]:
    repo = world.repository()
    try:
        return [(e.result, e.at) for e in repo.events(target="app")
                if e.action == action and e.kind is EventKind.NOTE]
    finally:
        repo.engine.dispose()


def _held_in_sql(world: World) -> bool:
    """Whether the stored rotation of ``app`` is held past its 1 s grace window."""
    rotations = world.rotations("app")
    if not rotations:
        return False
    rot = rotations[-1]
    return (rot.status is Status.RUNNING and rot.grace_ends_at is not None
            and rot.grace_started_at is not None
            and rot.grace_ends_at > rot.grace_started_at + timedelta(seconds=1.001))


def _revoked_at(world: World) -> datetime:
    repo = world.repository()
    try:
        (at,) = [e.at for e in repo.events(target="app")
                 if e.action == AuditAction.REVOKE_KEY and e.kind is EventKind.INTENT]
    finally:
        repo.engine.dispose()
    return at


def _last_used(world: World, key_id: str) -> datetime:
    account = world.accounts["app"].account_id
    (key,) = [k for k in world.emulator.state.keys(account, include_deleted=True)
              if k.key_id == key_id]
    assert key.last_used_at is not None
    return datetime.fromtimestamp(key.last_used_at).astimezone()


def _revoked_once_quiet(world: World, key_id: str) -> datetime:
    """When the old key was revoked: 1.5 s (the quiet period) or more after its last use,
    noted as quiet; the target's invariants hold."""
    revoked = _revoked_at(world)
    # The emulator reports the last use to the millisecond, hence the 1 ms.
    assert revoked >= _last_used(world, key_id) + timedelta(seconds=1.5, milliseconds=-1)
    assert [r for r, _ in _notes(world, AuditAction.GRACE_OVER)] == [AuditResult.QUIET]
    world.assert_invariants("app")
    return revoked


def test_the_old_key_is_revoked_only_after_its_consumer_stops_and_quiet_period_passes(
        make_world: MakeWorld) -> None:
    world = _usage_grace_world(make_world, quiet="1500ms", max_grace="1m")
    old = world.accounts["app"]
    consumer = Consumer(world, old.secret)
    try:
        with ThreadPoolExecutor(1) as pool:
            rotate = pool.submit(world.cli, "rotate", "app")
            world.wait_for_new_secret("app", old.secret)
            time.sleep(3.0)                 # past the grace window, the consumer still busy
            assert world.whoami(old.secret).status_code == 200, "revoked while still used"
            consumer.stop()
            done = rotate.result(timeout=60)
    finally:
        consumer.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    assert consumer.failures_while_used == 0
    assert world.whoami(old.secret).status_code == 401
    (rot,) = world.rotations("app")
    assert rot.status is Status.COMPLETED and rot.grace_started_at is not None
    assert _revoked_once_quiet(world, old.key_id) >= rot.grace_started_at + timedelta(
        seconds=4)
    held = _notes(world, AuditAction.GRACE_HELD)
    assert held and {r for r, _ in held} == {AuditResult.IN_USE}
    assert world.verify()[0] == 0


def test_a_hold_survives_a_sigkill_and_the_restarted_rotate_decides_from_the_provider(
        make_world: MakeWorld) -> None:
    world = _usage_grace_world(make_world, quiet="1500ms", max_grace="1m")
    old = world.accounts["app"]
    consumer = Consumer(world, old.secret)
    try:
        first = subprocess.Popen(world.cli_args("rotate", "app"), env=world.env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: _held_in_sql(world), 30, "the old key held past its grace window")
        finally:
            first.kill()
            first.wait(10)
        (held,) = world.rotations("app")
        assert held.status is Status.RUNNING and _held_in_sql(world)
        assert _notes(world, AuditAction.GRACE_HELD)
        assert world.whoami(old.secret).status_code == 200
        time.sleep(1.0)                     # the consumer goes on past the stored hold
        consumer.stop()
        code, out = world.cli_here("rotate", "app", "--wait-lease", "5s")
    finally:
        consumer.stop()
    assert code == 0, out
    assert consumer.failures_while_used == 0
    (rot,) = world.rotations("app")         # the same rotation, finished
    assert rot.status is Status.COMPLETED and rot.rotation_id == held.rotation_id
    _revoked_once_quiet(world, old.key_id)


def test_an_old_key_never_quiet_is_revoked_at_max_grace_by_the_daemons_timer(
        make_world: MakeWorld) -> None:
    world = _usage_grace_world(make_world, quiet="1s", max_grace="4s")
    old = world.accounts["app"]
    consumer = Consumer(world, old.secret)
    receiver = Receiver()
    receiver.up()
    config, port = daemon_config(world, "d", poll="1m")
    config.write_text(config.read_text() + HOOK.format(url=receiver.url("/hook")))
    daemon = Daemon(world, config, port, env={"IT_GRACE_HOOK_SECRET": HOOK_SECRET})
    try:
        daemon.wait_ready()
        wait_for(lambda: world.whoami(old.secret).status_code == 401, 30,
                 lambda: f"the old key revoked:\n{daemon.logs()[-3000:]}")
        wait_for(world.settled, 10, "the rotation to end")
        wait_for(lambda: receiver.got("/hook"), 10,
                 lambda: f"the max_grace_reached notice:\n{daemon.logs()[-3000:]}")
        assert daemon.terminate()[0] == 0
    finally:
        consumer.stop()
        daemon.close()
        receiver.down()
    (rot,) = world.rotations("app")
    assert rot.status is Status.COMPLETED and rot.grace_started_at is not None
    revoked = _revoked_at(world)
    assert rot.grace_started_at + timedelta(seconds=4) <= revoked
    assert revoked < rot.grace_started_at + timedelta(seconds=8)
    ((result, _),) = _notes(world, AuditAction.GRACE_OVER)
    assert result == AuditResult.MAX_GRACE_REACHED
    # One look per quiet period at most: the held deadlines were waited for, not polled.
    assert 1 <= len(_notes(world, AuditAction.GRACE_HELD)) <= 4
    warned = [e for e in daemon.events() if e.get("event") == "max_grace_reached"]
    assert len(warned) == 1 and warned[0]["level"] == "warning"
    # The people who answer for the key are told, once, by a signed notice.
    (hook,) = receiver.got("/hook")
    assert hook.signed_with(HOOK_SECRET)
    body = hook.json()
    assert (body["event"], body["target"], body["rotation_id"]) == (
        "max_grace_reached", "app", rot.rotation_id)
    assert body["details"]["key_id"] == rot.old_key_id
    assert old.secret not in hook.body.decode() and HOOK_SECRET not in daemon.logs()
    world.assert_invariants("app")
    assert world.verify()[0] == 0
