"""Small helpers several test modules share: walking an exception chain, serving HTTP,
waiting for a process to be stopped (SIGSTOP).
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from socketserver import BaseServer


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception reachable through ``__cause__`` and ``__context__``."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        item = pending.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        pending += [item.__cause__, item.__context__]


@contextmanager
def serving(server: BaseServer) -> Iterator[None]:
    """Run ``server`` on a thread for the ``with`` block, then shut it down and close it."""
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def process_state(pid: int) -> str:
    """The state letter of ``/proc/<pid>/stat``: R, S, D, T (stopped), Z..."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name, in parentheses, may hold spaces and parentheses itself.
    return stat[stat.rindex(")") + 2]


def wait_stopped(proc: subprocess.Popen[str], timeout: float) -> float:
    """Seconds until ``proc`` is stopped (state T); ``AssertionError`` if it exits or not."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        assert proc.poll() is None, f"exited ({proc.returncode}) instead of stopping"
        if process_state(proc.pid) == "T":
            return time.monotonic() - start
        time.sleep(0.01)
    raise AssertionError(f"process {proc.pid} not stopped after {timeout}s")


# A config whose only usable part is [database]: what `rotator db ...` needs.
DATABASE_ONLY_CONFIG = """
[database]
url = "{url}"
[vault]
url = "https://vault.example"
[vault.auth]
method = "token"
token_env = "UNUSED"
[providers.count]
type = "count"
base_url = "https://count.example"
management_key_env = "UNUSED"
[targets.app]
provider = "count"
service_account = "sa_1"
vault_path = "count/app"
"""


def all_at_once(count: int, work: Callable[[], object]) -> list[BaseException]:
    """``work`` on ``count`` threads released together; what any of them raised."""
    start = threading.Barrier(count)
    failures: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            work()
        except BaseException as exc:   # returned, every thread joined
            failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures
