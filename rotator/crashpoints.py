"""Named points where a test may kill the process: the crash-resume tests' hook.

Off unless ``ROTATOR_TEST_CRASH_AT`` names a point (and ``ROTATOR_TEST_HOOKS=1``), so a
production process never stops here. When armed, the process SIGKILLs itself: no
cleanup, no atexit, exactly what a power cut or an OOM kill does.
"""

from __future__ import annotations

import os
import signal

__all__ = ["crash_point"]


def crash_point(name: str) -> None:
    if os.environ.get("ROTATOR_TEST_HOOKS") != "1":
        return
    if os.environ.get("ROTATOR_TEST_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
