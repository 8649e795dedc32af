"""The SQLite one-replica claim: a live claim is refused at once, a stale one is waited
for with one log line, and a holder's id says whether its process is gone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from datetime import datetime, timedelta

import pytest
from structlog.testing import capture_logs

from rotator.app.batch import holder_is_gone
from rotator.core.errors import LeaseHeld
from rotator.core.ports import Lease
from rotator.daemon.claim import DAEMON_LEASE, take_sqlite_claim
from tests.fakes import FakeClock

TTL = 3.0
HOST = socket.gethostname()


class ScriptedLeases:
    """The claim is held while ``answers`` (what ``lease_of`` says, in turn) last."""

    def __init__(self, *answers: tuple[str, datetime] | None) -> None:
        self.answers = list(answers)

    def acquire_lease(self, target: str, holder: str, ttl_seconds: float,
                      now: datetime) -> Lease | None:
        assert target == DAEMON_LEASE
        return None if self.answers else Lease(target, holder, 1)

    def lease_of(self, target: str) -> tuple[str, datetime] | None:
        return self.answers.pop(0)


def _take(leases: ScriptedLeases, clock: FakeClock,
          stop: threading.Event | None = None) -> bool:
    return take_sqlite_claim(leases, clock, "me:1:nonce", TTL, stop or threading.Event())


def test_a_live_claim_is_refused_at_once_naming_its_holder() -> None:
    clock = FakeClock()
    leases = ScriptedLeases(("other-host:42:abcd", clock.now() + timedelta(seconds=2.5)))
    with capture_logs() as logs, pytest.raises(LeaseHeld) as refused:
        _take(leases, clock)
    assert logs == []
    assert "(pid 42 on host other-host, holder other-host:42:abcd)" in str(refused.value)
    assert "[database] url" in str(refused.value) and "sqlite:" not in str(refused.value)
    assert "stop that daemon first, or run several replicas on PostgreSQL" in str(refused.value)


def test_a_stale_claim_is_waited_for_with_one_line_then_taken() -> None:
    clock = FakeClock()
    until = clock.now() + timedelta(seconds=0.2)          # under TTL / 3 left
    leases = ScriptedLeases(("other-host:42:abcd", until), ("other-host:42:abcd", until))
    with capture_logs() as logs:
        assert _take(leases, clock) is True
    (line,) = logs
    assert line["event"] == "waiting_for_stale_sqlite_claim"
    assert line["why"] == "it is no longer renewed" and line["wait_seconds"] == 0.2


def test_a_claim_renewed_while_waited_for_is_refused() -> None:
    clock = FakeClock()
    until = clock.now() + timedelta(seconds=0.1)
    leases = ScriptedLeases(("other-host:42:abcd", until),
                            ("other-host:42:abcd", until + timedelta(seconds=TTL)))
    with capture_logs() as logs, pytest.raises(LeaseHeld, match="while this one waited"):
        _take(leases, clock)
    assert len(logs) == 1


def test_a_gone_holders_claim_is_stale_however_fresh() -> None:
    clock, ttl = FakeClock(), 0.45
    until = clock.now() + timedelta(seconds=0.4)   # renewed a moment ago: live by its age
    mine = f"{HOST}:{os.getpid()}:old"             # an earlier life of this pid
    with capture_logs() as logs:
        assert take_sqlite_claim(ScriptedLeases((mine, until), None), clock, "me:1:nonce",
                                 ttl, threading.Event()) is True
    assert [line["why"] for line in logs] == ["its process is gone"]


def test_stop_while_waiting_gives_up_without_the_claim() -> None:
    stop = threading.Event()
    stop.set()
    clock = FakeClock()
    leases = ScriptedLeases(("other-host:42:abcd", clock.now() + timedelta(seconds=0.5)))
    assert _take(leases, clock, stop) is False


def test_holder_is_gone_only_for_a_process_of_this_host_that_is_no_more() -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    assert holder_is_gone(f"{HOST}:{done.stdout.strip()}:abcd")
    assert holder_is_gone(f"{HOST}:{os.getpid()}:abcd")        # this pid: an earlier life
    assert not holder_is_gone(f"{HOST}:{os.getppid()}:abcd")   # alive
    assert not holder_is_gone(f"elsewhere-{HOST}:1:abcd")       # another host: unknown
    assert not holder_is_gone("?")
