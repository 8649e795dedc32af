"""Named points where a test may kill the process or inject a failure: the fault tests' hooks.

Off unless ``ROTATOR_TEST_HOOKS=1``, so a production process never stops here.
``ROTATOR_TEST_CRASH_AT=<point>``: the process SIGKILLs itself there (no cleanup, no
atexit, exactly what a power cut or an OOM kill does). ``ROTATOR_TEST_FAIL_AT=<point>``:
the call at that point fails, every time, with the error ``fail_point`` is given (the way
to reach a rollback that must restore Vault, which real servers will not produce on cue).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

__all__ = ["crash_point", "fail_point"]


def crash_point(name: str) -> None:
    if os.environ.get("ROTATOR_TEST_HOOKS") != "1":
        return
    if os.environ.get("ROTATOR_TEST_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def fail_point(name: str, error: Callable[[str], BaseException]) -> None:
    if os.environ.get("ROTATOR_TEST_HOOKS") != "1":
        return
    if os.environ.get("ROTATOR_TEST_FAIL_AT") == name:
        raise error(f"injected failure at {name} (ROTATOR_TEST_FAIL_AT)")
