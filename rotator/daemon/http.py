"""``/healthz``, ``/readyz`` and ``/metrics`` on one small threaded HTTP server.

    /healthz   200 while the daemon's wake-up loop keeps ticking (liveness: restart me if not)
    /readyz    200 when database, schema and Vault are ready, else 503; JSON says which
    /metrics   Prometheus text format
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import structlog
from prometheus_client import CONTENT_TYPE_LATEST

from rotator.daemon.metrics import DaemonMetrics
from rotator.daemon.readiness import Readiness

__all__ = ["HealthServer"]

log = structlog.get_logger("rotator.http")


class HealthServer:
    def __init__(self, host: str, port: int, *, alive: Callable[[], bool],
                 readiness: Readiness, metrics: DaemonMetrics) -> None:
        handler = _handler(alive, readiness, metrics)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="rotator-http")

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(alive: Callable[[], bool], readiness: Readiness,
             metrics: DaemonMetrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "rotator"
        sys_version = ""

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

    return Handler
