"""A command run on a pseudo-terminal, as a person at a terminal runs it."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import termios
import time

__all__ = ["on_a_pty"]


def on_a_pty(argv: list[str], env: dict[str, str], timeout: float,
             columns: int = 120) -> tuple[int, str]:
    """Run ``argv`` with a pty of ``columns`` as its stdin, stdout and stderr; its exit
    code and output."""
    master, slave = os.openpty()
    # A pty starts at 0 columns: set a width, as a terminal has one.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:      # the child closed its end: EIO on Linux
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return code, out.decode(errors="replace")
