"""A throwaway PostgreSQL cluster of a test's own: initdb, pg_ctl, on a free port.

The server binaries come from ``/usr/lib/postgresql/<version>/bin`` (the newest there).
PostgreSQL refuses to run as root, so when the tests are root the cluster belongs to, and
runs as, the unprivileged ``postgres`` user (``runuser``); otherwise it is the current
user's. Its directory is then outside pytest's ``tmp_path`` (private to root), made by
``tempfile`` and given to that user.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

SERVER_USER = "postgres"      # when we are root: the OS user the cluster runs as
SUPERUSER = "postgres"        # the database superuser, whoever runs it


def server_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda path: int(path.parent.parent.name))
    assert found, "no PostgreSQL server in /usr/lib/postgresql/*/bin (apt: postgresql)"
    return found[-1].parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class Cluster:
    """A cluster in ``root`` (``data/``, the socket, the log); ``close`` stops and removes it."""

    def __init__(self) -> None:
        self.bin = server_bin()
        self.as_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="rotator-pg-"))
        self.owner = pwd.getpwnam(SERVER_USER) if self.as_root else pwd.getpwuid(os.geteuid())
        os.chown(self.root, self.owner.pw_uid, self.owner.pw_gid)
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        try:
            self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                      "-E", "UTF8", "--no-sync")
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if self.as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120,
                              check=False)
        assert done.returncode == 0, f"{program}: {done.stdout}{done.stderr}{self.logs()}"

    def logs(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def start(self, settings: dict[str, str]) -> None:
        """Start on 127.0.0.1:``port`` (its socket in ``root``) with ``-c`` ``settings``."""
        base = {"listen_addresses": "127.0.0.1", "port": str(self.port),
                "unix_socket_directories": str(self.root), "fsync": "off"}
        options = " ".join(f"-c {shlex.quote(f'{k}={v}')}"
                           for k, v in {**base, **settings}.items())
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "-o", options, "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def close(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
