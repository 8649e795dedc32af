"""``/healthz``, ``/readyz`` and ``/metrics`` on one small threaded HTTP server.

    /healthz   200 while the daemon's wake-up loop keeps ticking (liveness: restart me if not)
    /readyz    200 when database, schema and Vault are ready, else 503; JSON says which
    /metrics   Prometheus text format

The server is hardened against clients that hold connections: one request per connection
(HTTP/1.0), at most ``MAX_CONNECTIONS`` of them at once, and a request whose line and
headers have not all arrived within ``REQUEST_TIMEOUT`` is dropped. When every slot is
taken, a new connection takes the slot of the oldest one still sending its request (a probe
sends its request at once, a slow client does not); if all are busy answering, it is closed
at once. Every error is one structlog event (never a raw traceback on stderr).
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST

from rotator.daemon.metrics import DaemonMetrics
from rotator.daemon.readiness import Readiness

__all__ = ["MAX_CONNECTIONS", "REQUEST_TIMEOUT", "HealthServer"]

log = structlog.get_logger("rotator.http")

# Probes and a scraper need a few connections at a time; a /readyz that waits on a slow
# database or Vault holds one for its own bounded time.
MAX_CONNECTIONS = 16
# Seconds a client gets to send its whole request, and any one send of the answer.
REQUEST_TIMEOUT = 5.0
# How many characters of a client's bad request line reach the debug log.
_LOGGED_CHARS = 200


class HealthServer:
    def __init__(self, host: str, port: int, *, alive: Callable[[], bool],
                 readiness: Readiness, metrics: DaemonMetrics,
                 max_connections: int = MAX_CONNECTIONS,
                 request_timeout: float = REQUEST_TIMEOUT) -> None:
        handler = _handler(alive, readiness, metrics, request_timeout)
        self._server = _BoundedServer((host, port), handler, max_connections=max_connections,
                                      request_timeout=request_timeout)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": min(0.5, request_timeout / 4)},
                                        daemon=True, name="rotator-http")

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` threads, slow requests dropped."""

    daemon_threads = True
    # The kernel's queue of connections not yet accepted: socketserver's 5 makes a burst
    # of connects wait a whole SYN retransmission (1 s) before they are even seen.
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], *,
                 max_connections: int, request_timeout: float) -> None:
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self._lock = threading.Lock()
        # Each admitted connection -> when it was accepted while its request is still
        # arriving, None once the request is read (it is being answered).
        self._admitted: dict[socket.socket, float | None] = {}
        self._refusing = False
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            admitted = self._make_room()
            if admitted:
                self._admitted[request] = time.monotonic()
            refused_first = not admitted and not self._refusing
            self._refusing = not admitted
        if not admitted:
            if refused_first:
                log.warning("http_connections_full", limit=self.max_connections,
                            detail="new connections are closed until one ends")
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def _make_room(self) -> bool:
        """Whether a new connection fits; drops the oldest one still sending if need be."""
        if len(self._admitted) < self.max_connections:
            return True
        arriving = [(since, sock) for sock, since in self._admitted.items() if since is not None]
        if not arriving:
            return False
        _, oldest = min(arriving, key=lambda pair: pair[0])
        self._drop(oldest, "slots_full")
        return True

    def request_read(self, connection: socket.socket) -> bool:
        """Mark the request of ``connection`` as read; False if it was dropped meanwhile."""
        with self._lock:
            if connection not in self._admitted:
                return False
            self._admitted[connection] = None
            return True

    def service_actions(self) -> None:
        """Between accepts (every poll interval): drop the requests that are too slow."""
        deadline = time.monotonic() - self.request_timeout
        with self._lock:
            late = [sock for sock, since in self._admitted.items()
                    if since is not None and since < deadline]
            for sock in late:
                self._drop(sock, "request_timeout")

    def _drop(self, connection: socket.socket, reason: str) -> None:
        # Shutting the socket down wakes its handler thread out of recv: it ends at once.
        del self._admitted[connection]
        with contextlib.suppress(OSError):
            connection.shutdown(socket.SHUT_RDWR)
        log.debug("http_connection_dropped", reason=reason)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._admitted.pop(request, None)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):  # the client went away, or was dropped
            log.info("http_client_gone", error=type(error).__name__)
        else:
            log.error("http_handler_failed", error=type(error).__name__, exc_info=True)


def _handler(alive: Callable[[], bool], readiness: Readiness, metrics: DaemonMetrics,
             request_timeout: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "rotator"
        sys_version = ""
        timeout = request_timeout  # any one recv or send of this connection
        server: _BoundedServer

        def parse_request(self) -> bool:
            parsed = super().parse_request()
            if not self.server.request_read(self.connection):
                # Dropped while its headers were arriving: what was read is cut short, and
                # nobody waits for an answer.
                self.close_connection = True
                return False
            return parsed

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                ok = alive()
                self._send(200 if ok else 503, b"ok\n" if ok else b"wake-up loop stalled\n",
                           "text/plain; charset=utf-8")
            elif path == "/readyz":
                report = readiness.check()
                metrics.ready.set(1 if report.ready else 0)
                body = json.dumps({"ready": report.ready, "checks": report.checks})
                self._send(200 if report.ready else 503, body.encode() + b"\n",
                           "application/json")
            elif path == "/metrics":
                self._send(200, metrics.render(), CONTENT_TYPE_LATEST)
            else:
                self._send(404, b"not found: try /healthz, /readyz or /metrics\n",
                           "text/plain; charset=utf-8")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("http_request", line=format % args)

        def log_error(self, format: str, *args: object) -> None:
            # Bad or timed-out requests: the client's problem, quoted briefly.
            log.debug("http_request_rejected", detail=(format % args)[:_LOGGED_CHARS])

    return Handler
