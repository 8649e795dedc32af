"""Why an operator rotated: the text of ``rotator rotate --reason``, checked in one place.

It is stored with the rotation and in its ``started`` audit row, and shown to auditors
(``audit_manual_rotations``): one plain line, bounded, with no control or format
characters (no terminal escapes, no bidirectional overrides, no line breaks).
"""

from __future__ import annotations

import unicodedata

__all__ = ["MANUAL_REASON_LIMIT", "check_manual_reason"]

MANUAL_REASON_LIMIT = 500   # characters


def check_manual_reason(text: str) -> str:
    """``text`` stripped, or ``ValueError`` saying what is wrong (never quoting it)."""
    reason = text.strip()
    if not reason:
        raise ValueError("a reason must say something: it is empty")
    if len(reason) > MANUAL_REASON_LIMIT:
        raise ValueError(f"a reason is at most {MANUAL_REASON_LIMIT} characters, "
                         f"this one has {len(reason)}")
    # Category C: control (Cc), format (Cf), surrogates, private use and unassigned.
    bad = sorted({f"U+{ord(c):04X}" for c in reason if unicodedata.category(c)[0] == "C"})
    if bad:
        raise ValueError(f"a reason is one line of printable text; it holds {', '.join(bad)}")
    return reason
