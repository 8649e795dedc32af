"""What every HTTP key provider shares: Count's adapter and the generic ``type = "http"``.

    wire.py       one call as sent (``Call``), one answer as read (``Answer``), typed field
                  reads (``Fields``) and the status table every provider's errors follow
    session.py    ``KeyApiSession``: the guarded client, retries, pacing, call records
    ratelimit.py  ``Retry-After`` and rate-limit headers, parsed (pure)
    pacing.py     ``Pacer``: one rate-limit budget per bearer for every thread
"""

from __future__ import annotations

from rotator.adapters.keyapi.session import CallRecord, KeyApiSession

__all__ = ["CallRecord", "KeyApiSession"]
