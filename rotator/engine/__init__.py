"""Drives one rotation through the ports; imports nothing of rotator's but ``rotator.core``.

    runner.py        lease, cleanup queue, resume, the step loop
    steps.py         the forward steps: plan, create, verify, store
    unwind.py        revoke, rollback and the cleanup queue
    step_base.py     what every step shares (the ports, the trail, the management key)
    audit_trail.py   an intent row before each side effect, an outcome row after it
    crashpoints.py   the test-only crash and fault hooks (off without their switch)
"""

from __future__ import annotations

__all__: list[str] = []
