"""The one place rotator's outbound HTTP clients are built: the key providers' httpx
clients (Count's, a ``type = "http"`` one's) and the hvac client (with its requests
session) that talks to Vault.

Every adapter takes its client from here, so a security default is set once for all of
them:

- TLS is verified; a CA bundle from the config replaces the system trust store rather than
  adding to it.
- Nothing is read from the environment: no ``HTTP(S)_PROXY``/``ALL_PROXY``, no
  ``SSL_CERT_FILE``/``REQUESTS_CA_BUNDLE``, no netrc, no ``VAULT_CLIENT_CERT``. A proxy is
  used only when the config names one (``proxy``).
- A redirect is never followed, so no token or request body is sent on to where it
  points: a key provider's client hands a 3xx back unread and without its Location (its adapter
  classifies the status), Vault's raises ``ResponseRefused`` (naming the service and the
  status, never the Location).
- Each attempt has a wall-clock deadline of ``timeout``: a watchdog shuts the attempt's
  socket down when it passes, whether the server is slow to answer or drips its body, so
  an attempt cannot outlive its timeout by more than a moment (the connect and TLS
  handshake keep their own timeout).
- ``Accept-Encoding: identity`` is asked for; a server that compresses anyway is decoded
  with a bounded decompressor, and the body cap (``MAX_BODY_BYTES``) counts decoded bytes
  as they stream in, so a gzip bomb inflates at most one cap's worth.

No module builds an HTTP client of its own (tests/unit/test_http_clients.py checks it).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import httpx
import hvac
import requests
from hvac.adapters import Adapter
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import HTTPError as Urllib3Error

from rotator.core.errors import ConfigError

__all__ = ["MAX_BODY_BYTES", "ResponseRefused", "body_within_cap", "provider_client",
           "vault_client", "webhook_client"]

MAX_BODY_BYTES = 1 << 20  # a larger answer is off contract; it is not read any further
_CHUNK = 65536
_OVER_CAP = "rotator.body_over_cap"   # response extension: the body was cut at the cap
_IDENTITY = {"Accept-Encoding": "identity"}


class ResponseRefused(Exception):
    """An answer no client of the factory passes on (a redirect to Vault, an encoding it
    cannot decode). Permanent: the same request would get the same answer. Names the
    service and the status only: never the Location, a header value or the body."""

    def __init__(self, service: str, reason: str, status: int) -> None:
        super().__init__(f"{service} {reason}")
        self.service, self.reason, self.status = service, reason, status


class _RefusedToRequests(ResponseRefused, requests.RequestException):
    """The refusal as hvac's callers see it: a requests error, which they translate."""


def _redirect(status: int) -> str:
    return f"answered a redirect (HTTP {status}), which is never followed"


# --- the per-attempt deadline --------------------------------------------------------------

class _Watchdog:
    """Shuts the sockets of one attempt down once its deadline passes.

    A shut-down socket wakes the read blocked on it (close() alone would not), so the
    client raises at once; ``fired`` tells the caller that the deadline, not the server,
    ended the attempt.
    """

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.fired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: object) -> None:
        if not isinstance(sock, socket.socket):
            return
        with self._lock:
            self._sockets.append(sock)
            fired = self.fired
        if fired:
            _shut(sock)

    def check(self) -> None:
        if self.fired or time.monotonic() >= self.deadline:
            self.fired = True
            raise TimeoutError

    def stop(self) -> None:
        self._timer.cancel()

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    # The plain socket's shutdown even for an SSLSocket: ssl's own would drop its state
    # under the thread reading from it.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


# --- the body: bounded decoding, the cap, the deadline ------------------------------------

def _decoder(encoding: str, service: str, status: int) -> zlib._Decompress | None:
    name = encoding.strip().lower()
    if name in ("", "identity"):
        return None
    if name in ("gzip", "x-gzip", "deflate"):
        return zlib.decompressobj(zlib.MAX_WBITS | (16 if "gzip" in name else 0))
    raise ResponseRefused(service, "answered in an encoding it was not asked for", status)


def _read_body(chunks: Iterable[bytes], encoding: str, watchdog: _Watchdog,
               service: str, status: int) -> bytes | None:
    """The decoded body, or None once it exceeds MAX_BODY_BYTES (nothing more is read)."""
    decoder = _decoder(encoding, service, status)
    body = bytearray()
    try:
        for chunk in chunks:
            watchdog.check()
            # Never more than one byte past the cap decoded at a time.
            body += chunk if decoder is None else decoder.decompress(
                chunk, MAX_BODY_BYTES + 1 - len(body))
            if len(body) > MAX_BODY_BYTES:
                return None
        watchdog.check()   # a socket the watchdog shut down can look like a clean end
        if decoder is not None:
            body += decoder.flush()
    except zlib.error:
        raise ResponseRefused(service, "answered a body that does not decode", status) from None
    return None if len(body) > MAX_BODY_BYTES else bytes(body)


def body_within_cap(response: httpx.Response) -> bytes | None:
    """A factory client's body, or None if it was larger than MAX_BODY_BYTES."""
    return None if response.extensions.get(_OVER_CAP) else response.read()


# --- key providers (Count, type = "http"): httpx ---------------------------------------

def _raw(response: httpx.Response) -> Iterable[bytes]:
    # The stream itself, not iter_raw(): a unit test's transport may hand one response
    # out twice, and a sync transport's stream is always a SyncByteStream.
    stream = response.stream
    if not isinstance(stream, httpx.SyncByteStream):
        raise TypeError("a sync transport answered with an async stream")
    return stream


class _GuardedTransport(httpx.BaseTransport):
    """Runs each request under its deadline and hands back a body already read in full."""

    def __init__(self, inner: httpx.BaseTransport, timeout: float, service: str) -> None:
        self._inner, self._timeout, self._service = inner, timeout, service

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        watchdog = _Watchdog(self._timeout)

        def trace(event: str, info: Mapping[str, Any]) -> None:
            if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
                stream = info.get("return_value")
                watchdog.watch(getattr(stream, "get_extra_info", lambda _: None)("socket"))

        request.extensions = {**request.extensions, "trace": trace}
        try:
            return self._answer(request, watchdog)
        except (httpx.TransportError, TimeoutError) as exc:
            if watchdog.fired:
                raise httpx.ReadTimeout(f"no answer within {self._timeout}s",
                                        request=request) from None
            raise exc from None
        finally:
            watchdog.stop()

    def _answer(self, request: httpx.Request, watchdog: _Watchdog) -> httpx.Response:
        response = self._inner.handle_request(request)
        try:
            status = response.status_code
            # A redirect is handed back unread and without its Location: never followed,
            # so the caller classifies the status alone.
            redirect = 300 <= status < 400
            body = b"" if redirect else _read_body(
                _raw(response), response.headers.get("content-encoding", ""), watchdog,
                self._service, status)
        finally:
            response.close()
        dropped = {b"content-encoding", b"content-length", b"transfer-encoding", b"location"}
        headers = [(name, value) for name, value in response.headers.raw   # bytes as sent
                   if name.lower() not in dropped]
        return httpx.Response(status, headers=headers, content=body or b"", request=request,
                              extensions={**response.extensions, _OVER_CAP: body is None})

    def close(self) -> None:
        self._inner.close()


def provider_client(*, service: str, base_url: str, timeout: float, verify: bool | str,
                    headers: Mapping[str, str], proxy: str | None = None,
                    transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """An httpx client for a key provider's API (Count's, or a ``type = "http"`` one's),
    ``service`` naming it in errors; ``transport`` is for an adapter's unit tests."""
    if transport is None:
        tls: bool | ssl.SSLContext = _ca_bundle(verify, service) if isinstance(
            verify, str) else verify
        # No keep-alive: every attempt opens its own connection, so its socket is known
        # to the watchdog before a request is written (and a 3xx cannot leave a reused
        # connection half read).
        transport = httpx.HTTPTransport(verify=tls, proxy=proxy, trust_env=False,
                                        limits=httpx.Limits(max_keepalive_connections=0))
    return httpx.Client(base_url=base_url, timeout=httpx.Timeout(timeout),
                        transport=_GuardedTransport(transport, timeout, service),
                        follow_redirects=False, trust_env=False,
                        headers={**headers, **_IDENTITY})


def webhook_client(*, timeout: float, verify: bool | str, proxy: str | None = None,
                   transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """An httpx client for a notification sink, under the same guard as Count's (no
    redirect followed, per-attempt deadline, capped body, nothing from the environment).
    No base URL: each sink posts to its own, which may hold its credential."""
    if transport is None:
        tls: bool | ssl.SSLContext = _ca_bundle(verify, "webhook") if isinstance(
            verify, str) else verify
        transport = httpx.HTTPTransport(verify=tls, proxy=proxy, trust_env=False,
                                        limits=httpx.Limits(max_keepalive_connections=0))
    return httpx.Client(timeout=httpx.Timeout(timeout),
                        transport=_GuardedTransport(transport, timeout, "webhook"),
                        follow_redirects=False, trust_env=False, headers=dict(_IDENTITY))


# --- Vault: hvac over requests -----------------------------------------------------------

_ATTEMPT = threading.local()   # the watchdog of the request this thread is sending


def _watch_current(sock: object) -> None:
    watchdog = getattr(_ATTEMPT, "watchdog", None)
    if watchdog is not None:
        watchdog.watch(sock)


class _WatchedConnection(HTTPConnection):
    """Hands its socket to the watchdog of the request it carries (new or reused)."""

    def connect(self) -> None:
        super().connect()
        _watch_current(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        if self.sock is not None:
            _watch_current(self.sock)
        super().request(*args, **kwargs)


class _WatchedTlsConnection(_WatchedConnection, HTTPSConnection):
    pass


class _WatchedPool(HTTPConnectionPool):
    ConnectionCls = _WatchedConnection


class _WatchedTlsPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedTlsConnection


_WATCHED_POOLS = {"http": _WatchedPool, "https": _WatchedTlsPool}

# Connections to one server kept for reuse (opened only as needed): one per thread that may
# hold one at once, 64 workers or `rotate --concurrency` at most, plus the heartbeat, the
# sweep and the health checks. requests' default of 10 made 16 workers close and reopen
# connections to Vault ("Connection pool is full, discarding connection").
KEPT_CONNECTIONS = 64 + 4


class _GuardedAdapter(HTTPAdapter):
    """requests' adapter with the factory's guards: deadline, no redirect, capped body."""

    def __init__(self, timeout: float, service: str) -> None:
        self._timeout, self._service = timeout, service
        super().__init__(pool_maxsize=KEPT_CONNECTIONS)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, *args: Any, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(*args, **kwargs)
        manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager

    def send(self, request: requests.PreparedRequest, stream: bool = False,
             timeout: Any = None, verify: bool | str = True, cert: Any = None,
             proxies: Mapping[str, str] | None = None) -> requests.Response:
        watchdog = _Watchdog(self._timeout)
        _ATTEMPT.watchdog = watchdog
        try:
            # cert=None: rotator configures no client certificate, so hvac's reading of
            # VAULT_CLIENT_CERT from the environment goes no further.
            response = super().send(request, stream=True, timeout=timeout, verify=verify,
                                    cert=None,
                                    proxies=None if proxies is None else dict(proxies))
            self._read(response, watchdog)
            return response
        except (requests.ConnectionError, Urllib3Error, OSError) as exc:
            if watchdog.fired:
                raise requests.exceptions.ReadTimeout(
                    f"no answer within {self._timeout}s", request=request) from None
            if isinstance(exc, requests.RequestException):
                raise
            raise requests.ConnectionError(type(exc).__name__, request=request) from None
        finally:
            _ATTEMPT.watchdog = None
            watchdog.stop()

    def _read(self, response: requests.Response, watchdog: _Watchdog) -> None:
        raw = response.raw
        try:
            status = response.status_code
            if 300 <= status < 400:
                raise _RefusedToRequests(self._service, _redirect(status), status)
            chunks = iter(lambda: raw.read1(_CHUNK, decode_content=False), b"")
            try:
                body = _read_body(chunks, response.headers.get("content-encoding", ""),
                                  watchdog, self._service, status)
            except ResponseRefused as exc:
                raise _RefusedToRequests(exc.service, exc.reason, exc.status) from None
            if body is None:
                raise _RefusedToRequests(self._service, f"answered more than {MAX_BODY_BYTES} "
                                         "bytes", status)
        except BaseException:
            response.close()
            raise
        raw.release_conn()
        response.headers.pop("content-encoding", None)
        response._content = body   # read here, under the deadline; requests keeps it
        response._content_consumed = True


def vault_client(*, url: str, verify: bool | str, namespace: str | None, timeout: float,
                 adapter: type[Adapter[Any]], proxy: str | None = None) -> hvac.Client:
    """An hvac client with no token: the caller's auth sets it (login or a token)."""
    session = requests.Session()
    session.trust_env = False          # no proxy, CA bundle or netrc from the environment
    session.verify = verify            # hvac takes a given session's own setting
    session.max_redirects = 0
    session.headers.update(_IDENTITY)
    if proxy is not None:
        session.proxies = {"http": proxy, "https": proxy}
    guarded = _GuardedAdapter(timeout, "Vault")
    for scheme in ("https://", "http://"):
        session.mount(scheme, guarded)
    # token="" rather than None: hvac would read VAULT_TOKEN or ~/.vault-token.
    return hvac.Client(
        url=url, token="", verify=verify, namespace=namespace, adapter=adapter,
        session=session, allow_redirects=False,
        timeout=timeout,  # type: ignore[arg-type]  # requests takes a float; stub says int
    )


def _ca_bundle(path: str, service: str) -> ssl.SSLContext:
    problem = None
    try:
        return ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        problem = type(exc).__name__
    raise ConfigError(f"cannot load the CA bundle for {service}", key="verify", path=path,
                      error=problem)
