"""The use cases both front ends share: the CLI and the daemon call these, nothing else.

    runtime.py      from a validated ``Config`` to live adapters (the one place wiring them)
    operations.py   rotate a batch, dry run, status, the audit query
    verify.py       the invariant checker behind ``rotator verify``
"""

from __future__ import annotations

__all__: list[str] = []
