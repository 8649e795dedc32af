"""The use cases both front ends share: the CLI and the daemon call these, nothing else.

    runtime.py      from a validated ``Config`` to live adapters (the one place wiring them)
    operations.py   rotate a batch, dry run, status
    database.py     schema upgrade and revision, and a reader for ``rotator audit``
    verify.py       the invariant checker behind ``rotator verify``
    connect.py      ``rotator check-config --connect``: Vault, each path, each provider
    next_step.py    what to do about a refusal that changed nothing
"""

from __future__ import annotations

__all__: list[str] = []
