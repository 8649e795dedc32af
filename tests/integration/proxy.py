"""A loopback TCP forwarder a test can cut: Vault 'unreachable' without losing its data."""

from __future__ import annotations

import contextlib
import socket
import threading

from rotator.devtools.devvault import free_port


class CuttableProxy:
    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._target = target_port
        self._cut = threading.Event()
        self._stop = threading.Event()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.1)
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        # What the cuts did: how many cuts, connections they severed, connections refused.
        self.cuts = self.severed = self.refused = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            self.cuts += 1
            # _conns holds (client, upstream) pairs; a pair that ended is closed already.
            self.severed += sum(client.fileno() != -1 for client in self._conns[::2])
            for conn in self._conns:
                # shutdown() first: close() alone neither wakes the thread blocked in recv()
                # on it nor ends the TCP connection, so the server would never notice.
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._conns.clear()

    def restore(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self._stop.set()
        self.cut()
        self._thread.join(timeout=2)
        self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._cut.is_set():
                client.close()   # as good as connection refused for the client
                with self._lock:
                    self.refused += 1
                continue
            upstream = socket.create_connection(("127.0.0.1", self._target))
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                # shutdown() ends the connection even while the other direction's thread
                # is blocked in recv() on the same socket (close() alone would not).
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()
