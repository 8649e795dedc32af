"""Count: the key provider over httpx.

    client.py     ``CountProvider``, the ``KeyProvider`` port: calls, retries, errors
    wire.py       one response in, a value or a classified error out (pure)
    ratelimit.py  ``Retry-After`` and ``RateLimit-*`` headers, parsed (pure)
    pacing.py     ``Pacer``: one rate-limit budget per bearer for every thread
"""

from __future__ import annotations

from rotator.adapters.count.client import CallRecord, CountProvider

__all__ = ["CallRecord", "CountProvider"]
