"""Named points where a test may kill, freeze or fail the process: the fault tests' hooks.

Off unless ``ROTATOR_TEST_HOOKS=1``, so a production process never stops here.
``ROTATOR_TEST_CRASH_AT=<point>``: the process SIGKILLs itself there (no cleanup, no
atexit, exactly what a power cut or an OOM kill does). ``ROTATOR_TEST_PAUSE_AT=<point>``:
the process SIGSTOPs itself there, the first time it reaches the point only, and carries
on from there when sent SIGCONT (a VM paused, a stop-the-world stall, a frozen container:
its leases lapse meanwhile). ``ROTATOR_TEST_FAIL_AT=<point>``:
the call at that point fails, every time, with the error ``fail_point`` is given (the way
to reach a rollback that must restore Vault, which real servers will not produce on cue).

The point names are test and operator vocabulary too, so they are built here from
``rotator.core``'s words and nowhere else:

    started                  a new rotation's row and its ``started`` note are written
    <action>:before|after    around a side effect (``AuditAction``): after its intent row,
                             after its outcome row
    step:<step>              the rotation's new step is saved
    read_back                (fail point) the read of Vault after the write
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from enum import StrEnum
from typing import Any

from rotator.core.model import Step
from rotator.core.vocabulary import AuditAction

__all__ = ["STARTED", "Moment", "crash_point", "effect_point", "fail_point", "guard_pauses",
           "step_point"]


class Moment(StrEnum):
    BEFORE = "before"   # the intent is recorded, the call not made
    AFTER = "after"     # the call made and its outcome recorded


STARTED = AuditAction.STARTED.value

# Held from the first pause on: a pause point freezes the process once, not on every pass
# (nor once per thread that gets there).
_paused = threading.Lock()

# Held around a pause (``guard_pauses``): what no other thread may be in the middle of when
# the process freezes.
_pause_guards: list[AbstractContextManager[Any]] = []


def guard_pauses(guard: AbstractContextManager[Any]) -> None:
    """Freeze at a pause point only while holding ``guard`` (with the hooks on).

    A pause is a test's stand-in for a stalled replica at a step boundary; frozen in the
    middle of another thread's SQLite transaction it would hold the database's write lock,
    which no stalled replica that wrote only at boundaries holds.
    """
    if os.environ.get("ROTATOR_TEST_HOOKS") == "1":
        _pause_guards.append(guard)


def effect_point(action: AuditAction, moment: Moment) -> str:
    return f"{action.value}:{moment.value}"


def step_point(step: Step) -> str:
    return f"step:{step.value}"


def crash_point(name: str) -> None:
    if os.environ.get("ROTATOR_TEST_HOOKS") != "1":
        return
    if os.environ.get("ROTATOR_TEST_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("ROTATOR_TEST_PAUSE_AT") == name and _paused.acquire(blocking=False):
        # Sent to this very thread, the stop takes it before it runs one more line; sent to
        # the process (os.kill), the kernel hands it to the main thread, and this one runs
        # on meanwhile (into its next SQL transaction, seen holding SQLite's write lock).
        with ExitStack() as held:
            for guard in _pause_guards:
                held.enter_context(guard)
            signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)


def fail_point(name: str, error: Callable[[str], BaseException]) -> None:
    if os.environ.get("ROTATOR_TEST_HOOKS") != "1":
        return
    if os.environ.get("ROTATOR_TEST_FAIL_AT") == name:
        raise error(f"injected failure at {name} (ROTATOR_TEST_FAIL_AT)")
