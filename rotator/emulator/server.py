"""The emulator's HTTP plumbing and lifecycle: a real threaded HTTP/1.1 server.

``Emulator`` binds a ``ThreadingHTTPServer`` (port 0 picks a free port), serves it on
a daemon thread, and on ``stop()`` closes every connection, keep-alive ones included,
so no socket outlives it. The handler only turns bytes into a ``Request`` and a
``Reply`` into bytes: ``/_emulator/...`` goes to the control endpoints (with the
emulator's ``control_token``), everything else to ``CountApi``. Nothing is logged (secrets
travel in headers and bodies). It binds a loopback address only, unless ``allow_remote``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import selectors
import socket
import socketserver
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from rotator.emulator import alt
from rotator.emulator.api import CountApi
from rotator.emulator.control import PREFIX, TOKEN_HEADER, handle_control
from rotator.emulator.envelope import Reply, Request, failure
from rotator.emulator.faults import EmulatorSettings
from rotator.emulator.state import EmulatorState

__all__ = ["Emulator", "NotLoopback", "SeededAccount", "is_loopback"]

_MAX_BODY = 1 << 20


@dataclass(frozen=True, slots=True)
class SeededAccount:
    """A service account seeded with one key, and that key's secret."""

    account_id: str
    name: str
    role: str
    key_id: str
    secret: str = field(repr=False)


class NotLoopback(ValueError):
    """A non-loopback address to bind, without ``allow_remote``."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback IP address (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # another name: it may resolve to anything


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], api: CountApi,
                 stopping: threading.Event, control_token: str) -> None:
        self.api = api
        self.stopping = stopping
        self.control_token = control_token
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self._wake_recv, self._wake_send = socket.socketpair()

    def serve(self) -> None:
        """Like ``serve_forever``, but ``wake()`` ends it at once instead of at a poll."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            selector.register(self._wake_recv, selectors.EVENT_READ)
            while True:
                ready = {key.fileobj for key, _ in selector.select()}
                if self._wake_recv in ready:
                    return
                self.handle_request()  # the listening socket is readable: accept

    def wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_send.send(b"x")

    def server_close(self) -> None:
        super().server_close()  # joins the handler threads
        self._wake_recv.close()
        self._wake_send.close()

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall on DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def process_request(self, request: socket.socket | tuple[bytes, socket.socket],
                        client_address: Any) -> None:
        if isinstance(request, socket.socket):
            with self._open_lock:
                self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        if isinstance(request, socket.socket):
            with self._open_lock:
                self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake every handler thread (idle keep-alive ones too) so that it ends."""
        with self._open_lock:
            open_now = list(self._open)
        for sock in open_now:
            with contextlib.suppress(OSError):  # already closed by its handler
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: socket.socket | tuple[bytes, socket.socket],
                     client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # the client went away (or stop() closed the connection)
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "CountEmulator/0.1"
    timeout = 60.0  # an idle keep-alive connection is dropped after this
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms stalls
    server: _Server

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: request lines and errors are not logged (no secrets anywhere)."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        body = self._read_body()
        if isinstance(body, Reply):
            self._write(body)
            return
        request = Request(self.command, urlsplit(self.path).path, self._bearer(), body)
        try:
            if request.path.startswith(PREFIX):
                reply = handle_control(self.server.api, request,
                                       token=self.server.control_token,
                                       presented=self.headers.get(TOKEN_HEADER))
            else:
                reply = self.server.api.handle(request)
        except Exception:  # a bug in the emulator: answer 500 rather than hang up
            traceback.print_exc()
            reply = failure(500, "internal_error", "emulator error")
        self._write(reply)

    def _bearer(self) -> str | None:
        if self.server.api.settings.layout == "alt":
            return alt.credential(self.headers.get(alt.AUTH_HEADER))
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return token.strip()

    def _read_body(self) -> bytes | Reply:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            return failure(411, "invalid_request", "send a Content-Length, not chunks")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_BODY:
            self.close_connection = True
            return failure(400, "invalid_request", "bad or too large Content-Length")
        return self.rfile.read(length) if length else b""

    def _write(self, reply: Reply) -> None:
        if self.server.stopping.is_set():
            self.close_connection = True
        self.send_response(reply.status)
        content_type = reply.content_type
        if not content_type.startswith("application/json"):
            content_type += "; charset=utf-8"
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(reply.body)


class Emulator:
    """The Count emulator: ``with Emulator(EmulatorSettings(key_limit=3)) as emu: ...``.

    ``control_token`` (a random one if not given) guards the ``/_emulator/`` endpoints.
    ``identity_seed`` makes account ids, key ids and secrets one fixed sequence.
    A host that is not loopback raises ``NotLoopback`` unless ``allow_remote``: anyone who
    reaches it can use the fake API (the control endpoints still need the token).
    """

    def __init__(self, settings: EmulatorSettings | None = None, host: str = "127.0.0.1",
                 port: int = 0, *, clock: Callable[[], float] = time.time,
                 control_token: str | None = None, allow_remote: bool = False,
                 identity_seed: int | None = None) -> None:
        if not allow_remote and not is_loopback(host):
            raise NotLoopback("not a loopback address: the emulator binds one unless remote "
                              "access is allowed explicitly")
        if control_token is not None and not control_token.strip():
            raise ValueError("the control token must not be empty")
        self.control_token = control_token or secrets.token_urlsafe(24)
        self.state = EmulatorState(clock, identity_seed)
        self._stopping = threading.Event()
        self._api = CountApi(self.state, EmulatorSettings() if settings is None else settings,
                             clock=clock,
                             sleep=self._stopping.wait)
        self._address = (host, port)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def settings(self) -> EmulatorSettings:
        return self._api.settings

    @settings.setter
    def settings(self, value: EmulatorSettings) -> None:
        self._api.settings = value

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not started")
        return self._server.server_port

    @property
    def url(self) -> str:
        """``http://host:port``, without a trailing slash."""
        host = self._address[0]
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def start(self) -> Emulator:
        """Bind and serve on a daemon thread; returns self. OSError if the port is taken."""
        if self._server is not None:
            raise RuntimeError("the emulator is already started")
        self._stopping.clear()
        server = _Server(self._address, self._api, self._stopping, self.control_token)
        thread = threading.Thread(target=server.serve,
                                  name=f"count-emulator:{server.server_port}", daemon=True)
        thread.start()
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stop serving, close every connection and the socket. Idempotent."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()
        server.wake()
        thread.join()
        server.close_connections()
        server.server_close()  # joins the handler threads
        self._server = self._thread = None

    def seed_account(self, name: str, role: str = "member") -> SeededAccount:
        """Add a service account with one key (usable at once); returns its secret."""
        account, key = self.state.add_account(name, role)
        return SeededAccount(account.id, account.name, account.role, key.key_id, key.secret)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "stopped"
        return f"<Emulator {where}>"
