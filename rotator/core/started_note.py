"""The ``detail`` of a rotation's ``started`` event: who asked, why, and its grace window.

The ``rotations`` row holds the actor too, but its owner can update that row; the events
are append-only and hash-chained (``audit_chain``), and ``detail`` is chained content. So
the started event's detail is where the audit trail itself answers "who started this
rotation". Every started event ever written has this form (rows from revision 0001 on)::

    <trigger> rotation by <actor>; grace <seconds>s[ (held ...)][; reason: <text>]

where ``(held while used: quiet <s>s, max <s>s)`` is there since usage-aware grace, for a
rotation that holds its old key while the provider says it is still used.

The trigger is one word (a ``Trigger``), the actor is everything up to the first
``"; grace "`` (``user@host``, a daemon's replica id, ``scheduler``), and a reason, when one
was given, is last, so it may hold anything a one-line reason may. FROZEN like the
vocabulary: stored rows carry it, and ``tests/unit/test_started_note.py`` reads old ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["StartedNote", "parse_started", "started_detail"]

_FORM = re.compile(
    r"(?P<trigger>\S+) rotation by (?P<actor>.+?); grace (?P<grace>[0-9.e+-]+)s"
    r"(?: \(held while used: quiet [0-9.e+-]+s, max [0-9.e+-]+s\))?"
    r"(?:; reason: (?P<reason>.*))?", re.DOTALL)


@dataclass(frozen=True, slots=True)
class StartedNote:
    trigger: str
    actor: str
    grace_seconds: float
    reason: str | None


def started_detail(trigger: str, actor: str, grace_seconds: float, reason: str | None,
                   usage: tuple[float, float] | None = None) -> str:
    """The detail a started event is written with; ``usage``: (quiet period, max grace)."""
    because = "" if reason is None else f"; reason: {reason}"
    held = "" if usage is None else (f" (held while used: quiet {usage[0]:g}s, "
                                     f"max {usage[1]:g}s)")
    return f"{trigger} rotation by {actor}; grace {grace_seconds:g}s{held}{because}"


def parse_started(detail: str | None) -> StartedNote | None:
    """What a started event's detail says; ``None`` if it is not of that form."""
    found = _FORM.fullmatch(detail or "")
    if found is None:
        return None
    return StartedNote(found["trigger"], found["actor"], float(found["grace"]),
                       found["reason"])
