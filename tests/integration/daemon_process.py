"""``rotator run`` as a real child process: its config, its endpoints, its logs, its end."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from rotator.devtools.devvault import free_port
from tests.integration.world import World
from tests.support import process_state, wait_stopped

DAEMON_TABLES = """
[daemon]
listen = "127.0.0.1:{port}"
poll_interval = "{poll}"
shutdown_timeout = "{shutdown}"
workers = {workers}

[defaults.schedule]
{schedule}
"""

# Short call budgets (timeout 1s, retries within 1s) for the matrices: a take-over that
# finds a call of the killed or frozen holder undecided waits until that call must have
# ended, its lease's expiry plus timeout plus max_elapsed, so this keeps each case short.
QUICK_CALLS = {'timeout = "5s"': 'timeout = "1s"', 'max_elapsed = "5s"': 'max_elapsed = "1s"',
               'max_elapsed = "2s"': 'max_elapsed = "1s"'}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def daemon_config(world: World, name: str, *, poll: str = "200ms", shutdown: str = "10s",
                  workers: int = 4, schedule: str = 'every = "30d"',
                  replace: dict[str, str] | None = None) -> tuple[Path, int]:
    """The world's config plus the daemon's tables, as a new file; and its port."""
    port = free_port()
    text = world.config_path.read_text()
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    # [defaults.schedule] must follow [defaults]' own keys: append it at the very end.
    path = world.config_path.with_name(f"{name}.toml")
    path.write_text(text + DAEMON_TABLES.format(port=port, poll=poll, shutdown=shutdown,
                                                workers=workers, schedule=schedule))
    return path, port


class Daemon:
    def __init__(self, world: World, config: Path, port: int, *args: str,
                 env: dict[str, str] | None = None, name: str = "daemon",
                 log_flags: bool = True) -> None:
        self.port = port
        self.log_path = config.with_name(f"{name}.log")
        self._log = self.log_path.open("w")
        flags = ["--log-format", "json", "--log-level", "debug"] if log_flags else []
        argv = [sys.executable, "-m", "rotator", "--config", str(config), *flags,
                "run", *args]
        self.started = time.monotonic()
        # PYTHONFAULTHANDLER: a daemon that hangs is sent SIGABRT (``terminate``) and dumps
        # every thread's stack into its log.
        self.proc = subprocess.Popen(argv, env={**world.env, "PYTHONFAULTHANDLER": "1",
                                                **(env or {})},
                                     stdout=self._log, stderr=subprocess.STDOUT, text=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url(path), timeout=10)

    def ready(self, timeout: float = 10) -> bool:
        """Whether /readyz answers 200 now."""
        try:
            return httpx.get(self.url("/readyz"), timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 30) -> float:
        """Seconds from process start until /readyz answered 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"daemon exited early:\n{self.logs()}"
            if self.ready():
                return time.monotonic() - self.started
            time.sleep(0.02)
        raise AssertionError(f"daemon not ready after {timeout}s:\n{self.logs()[-4000:]}")

    def stopped(self) -> bool:
        """Whether the process is stopped (SIGSTOP, a pause point)."""
        return self.proc.poll() is None and process_state(self.proc.pid) == "T"

    def metrics(self) -> Samples:
        return parse_metrics(self.get("/metrics").text)

    def terminate(self, timeout: float = 20) -> tuple[int, float]:
        """SIGTERM; the exit code and how long the exit took."""
        self.proc.send_signal(signal.SIGTERM)
        return self.terminate_after_signal(timeout)

    def terminate_after_signal(self, timeout: float) -> tuple[int, float]:
        """The exit code of a process already sent its signal, and how long it took; one
        still running after ``timeout`` is sent SIGABRT, its threads' stacks into the log."""
        start = time.monotonic()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)
            self.proc.wait(10)
            raise AssertionError(f"still running {timeout:g}s after its signal:\n"
                                 f"{self.logs()[-12000:]}") from None
        self._log.close()
        return code, time.monotonic() - start

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._log.close()

    def wait_stopped(self, timeout: float) -> float:
        """Seconds until the process stopped itself (a pause point: state T)."""
        try:
            return wait_stopped(self.proc, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n{self.logs()[-3000:]}") from None

    def freeze(self) -> None:
        """SIGSTOP: the whole process stops where it is, its leases left to lapse."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> int:
        """SIGCONT a stopped daemon; the length of its log until then (see ``events``)."""
        size = self.log_path.stat().st_size
        self.proc.send_signal(signal.SIGCONT)
        return size

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._log.close()
        return code

    def logs(self, since: int = 0) -> str:
        """The log, from byte ``since`` on."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_bytes()[since:].decode(errors="replace")

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        """The JSON log events, from byte ``since`` of the log on."""
        out = []
        for line in self.logs(since).splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self.proc.wait(10)
        self._log.close()


def parse_metrics(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for(check: Callable[[], bool], timeout: float, what: str | Callable[[], str],
             interval: float = 0.05) -> None:
    """Poll ``check`` until true; else fail, naming ``what`` (a callable is called only
    then, so that a message carrying logs shows them as they were at the timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for "
                         f"{what() if callable(what) else what}")


def crash_env(point: str) -> dict[str, str]:
    return {"ROTATOR_TEST_HOOKS": "1", "ROTATOR_TEST_CRASH_AT": point}


def pause_env(point: str) -> dict[str, str]:
    return {"ROTATOR_TEST_HOOKS": "1", "ROTATOR_TEST_PAUSE_AT": point}

