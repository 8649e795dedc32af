"""The generic HTTP key provider (``type = "http"``): the ``KeyProvider`` port over any API
with Count's create/list/delete/probe shape, described in TOML.

    client.py     ``HttpProvider``: the calls, built from ``HttpProviderConfig``
    reading.py    where its answers keep values, ids and error codes (JSON pointers)
"""

from __future__ import annotations

from rotator.adapters.http_provider.client import HttpProvider

__all__ = ["HttpProvider"]
