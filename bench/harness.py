"""What the programs under bench/ share: the config they run rotator with, a database of
their own on SQLite or PostgreSQL, a daemon started and read from outside (/readyz,
/metrics, /proc). Imported by the programs beside it (``python bench/<program>.py`` puts
this folder first on the path).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from rotator.adapters.sql.schema import upgrade

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# Vault's token and Count's management key come from these variables (``bench_env``).
CONFIG = """
[database]
url = "{db}"
[daemon]
listen = "127.0.0.1:{port}"
{daemon}
[logging]
level = "warning"
[vault]
url = "{vault}"
[vault.auth]
method = "token"
token_env = "BENCH_VAULT_TOKEN"
[providers.count]
type = "count"
base_url = "{count}"
management_key_env = "BENCH_COUNT_KEY"
[defaults]
grace = "0s"
[defaults.probe]
interval = "10ms"
{targets}"""
TARGET = """
[targets.{name}]
provider = "count"
service_account = "{sa}"
vault_path = "bench/{name}"
"""


def bench_env(vault_token: str, count_key: str) -> dict[str, str]:
    return {**os.environ, "BENCH_VAULT_TOKEN": vault_token, "BENCH_COUNT_KEY": count_key}


DB_KINDS = ("sqlite", "postgresql")


def add_db_option(parser: argparse.ArgumentParser) -> None:
    """``--db sqlite|postgresql``; ``postgres``, as the issue and most people spell it, is
    read as ``postgresql``."""
    parser.add_argument("--db", default="sqlite", metavar="sqlite|postgresql",
                        type=lambda v: "postgresql" if v == "postgres" else v,
                        choices=DB_KINDS)


@contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    """A migrated database of its own: a file in ``folder``, or a PostgreSQL schema that is
    dropped afterwards."""
    if kind == "sqlite":
        url = f"sqlite:///{folder / f'bench-{uuid.uuid4().hex[:6]}.db'}"
        upgrade(url)
        yield url
        return
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = f"{PG}?options=-csearch_path%3D{schema}"
        upgrade(url)
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def start_daemon(config: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "rotator", "-c", str(config), "run"],
                            env=env, stderr=subprocess.DEVNULL)


def wait_ready(proc: subprocess.Popen[bytes], port: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            sys.exit(f"rotator run exited {proc.returncode} before it was ready")
        time.sleep(0.005)
    sys.exit(f"rotator run not ready after {timeout:g}s")


def metrics(port: int) -> dict[str, float]:
    """Each sample of the daemon's /metrics page summed over its labels, except that
    ``rotator_provider_calls_total`` is kept per call (``name:call``)."""
    page = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    sums: dict[str, float] = {}
    for line in page.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        sample, value = line.rsplit(" ", 1)
        name = sample.split("{", 1)[0]
        if name == "rotator_provider_calls_total":
            name += ":" + sample.split('call="', 1)[1].split('"', 1)[0]
        sums[name] = sums.get(name, 0.0) + float(value)
    return sums


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class CountingProxy:
    """An HTTP/1.1 reverse proxy on loopback that counts the requests it forwards: how many
    calls a client made to the server behind it (OpenBao takes no audit device over its
    API, so this is how a bench counts Vault calls)."""

    def __init__(self, upstream: str) -> None:
        self.requests = 0
        lock = threading.Lock()
        forward = httpx.Client(base_url=upstream, timeout=30)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self) -> None:
                with lock:
                    proxy.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length", "connection")}
                answer = forward.request(self.command, self.path, content=body,
                                         headers=headers)
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding",
                                            "connection", "content-encoding"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_LIST = _relay  # noqa: N815

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._forward = forward
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._forward.close()
