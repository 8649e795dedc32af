"""The daemon's health/metrics server on loopback: its default bind, its connection cap,
its request deadline, and its errors as structlog events (never a raw traceback)."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rotator.adapters.sql.schema import make_engine
from rotator.config.daemon import DaemonConfig
from rotator.daemon.http import HealthServer
from rotator.daemon.metrics import DaemonMetrics
from rotator.daemon.readiness import Readiness

HALF_SENT = b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n"   # no blank line: never ends


def serve(readiness_more: dict[str, object] | None = None) -> HealthServer:
    readiness = Readiness(make_engine("sqlite://"), lambda: True,
                          more=readiness_more)  # type: ignore[arg-type]
    server = HealthServer("127.0.0.1", 0, alive=lambda: True, readiness=readiness,
                          metrics=DaemonMetrics())
    server.start()
    return server


@pytest.fixture
def health() -> Iterator[HealthServer]:
    server = serve()
    try:
        yield server
    finally:
        server.stop()


def connect(port: int, first: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if first:
        sock.sendall(first)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (EOF or reset), waiting up to its timeout."""
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True


def test_the_default_listen_address_is_loopback() -> None:
    config = DaemonConfig()
    assert config.listen == "127.0.0.1:9108"
    assert (config.host, config.port) == ("127.0.0.1", 9108)


def test_sixty_half_sent_requests_pin_no_sixty_threads_and_healthz_answers(
        health: HealthServer) -> None:
    before = threading.active_count()
    held = [connect(health.port, HALF_SENT) for _ in range(60)]
    try:
        time.sleep(0.5)  # every connection accepted (or dropped) by now
        pinned = threading.active_count() - before
        started = time.monotonic()
        reply = httpx.get(f"http://127.0.0.1:{health.port}/healthz", timeout=1)
        took = time.monotonic() - started
    finally:
        for sock in held:
            sock.close()
    assert pinned <= 17, f"{pinned} threads for 60 half-sent requests"
    assert reply.status_code == 200 and took < 1.0


def test_a_request_sent_a_byte_at_a_time_is_dropped_after_a_few_seconds(
        health: HealthServer) -> None:
    sock = connect(health.port, b"GET /healthz HTTP/1.0\r\n")
    dropped = threading.Event()
    started = time.monotonic()

    def drip() -> None:  # one byte every 0.3 s: no single recv ever times out
        try:
            while not dropped.wait(0.3):
                sock.send(b"X")
        except OSError:
            pass

    dripper = threading.Thread(target=drip)
    dripper.start()
    try:
        assert closed_by_server(sock)
        took = time.monotonic() - started
    finally:
        dropped.set()
        dripper.join(5)
        sock.close()
    assert 1.0 < took < 7.0, f"closed after {took:.1f}s"


def test_over_the_cap_a_connection_is_closed_at_once_and_the_answers_go_on() -> None:
    release, entered = threading.Event(), threading.Event()

    def slow_check() -> str:
        entered.set()
        return "ok" if release.wait(10) else "timed out"

    server = serve({"slow": slow_check})
    # Sixteen /readyz, answered one after the other (the check holds a lock): every slot
    # is taken by a request being answered, none by one still arriving.
    busy = [connect(server.port, b"GET /readyz HTTP/1.0\r\n\r\n") for _ in range(16)]
    try:
        assert entered.wait(5)
        time.sleep(1.0)  # the other fifteen read and waiting for the check
        extra = connect(server.port, b"GET /healthz HTTP/1.0\r\n\r\n")
        started = time.monotonic()
        assert closed_by_server(extra)
        assert time.monotonic() - started < 1.0
        extra.close()
        release.set()
        answers = [sock.makefile("rb").read() for sock in busy]
        # Every one answered in full (503: the in-memory database has no schema).
        assert all(b'"slow": "ok"' in answer for answer in answers), answers
        assert httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=1).status_code == 200
    finally:
        release.set()
        for sock in busy:
            sock.close()
        server.stop()


SERVER_SCRIPT = """
import sys, time
from rotator.adapters.sql.schema import make_engine
from rotator.daemon.http import HealthServer
from rotator.daemon.metrics import DaemonMetrics
from rotator.daemon.readiness import Readiness
from rotator.logs import configure_logging

configure_logging("json", "info")
server = HealthServer("127.0.0.1", 0, alive=lambda: True,
                      readiness=Readiness(make_engine("sqlite://"), lambda: True),
                      metrics=DaemonMetrics())
server.start()
print(server.port, flush=True)
sys.stdin.read()
server.stop()
"""


def reset_after_sending(port: int, request: bytes) -> None:
    """Send ``request`` and hang up with a reset (SO_LINGER 0): the answer has nowhere to go."""
    sock = connect(port, request)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_a_client_that_hangs_up_mid_answer_is_one_structlog_event(tmp_path: Path) -> None:
    err_path = tmp_path / "stderr"
    with err_path.open("w") as err, subprocess.Popen(
            [sys.executable, "-c", SERVER_SCRIPT], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=err, text=True) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        port = int(proc.stdout.readline())
        deadline = time.monotonic() + 10
        while "http_client_gone" not in err_path.read_text() and time.monotonic() < deadline:
            reset_after_sending(port, b"GET /metrics HTTP/1.0\r\n\r\n")
            time.sleep(0.02)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        proc.stdin.close()
        assert proc.wait(10) == 0
    lines = err_path.read_text().splitlines()
    assert "Traceback" not in err_path.read_text()
    events = [json.loads(line) for line in lines]   # every line is a structlog JSON event
    gone = [e for e in events if e["event"] == "http_client_gone"]
    assert gone and all(e["error"] in {"ConnectionResetError", "BrokenPipeError"} for e in gone)
