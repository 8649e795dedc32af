"""The Count emulator: a real HTTP server implementing docs/count-api.md, with faults.

It serves the tests, the demo and the benchmarks, and ``rotator emulator`` starts it::

    with Emulator(EmulatorSettings(key_limit=2, propagation_delay=0.2)) as emu:
        admin = emu.seed_account("admin", role="admin")
        httpx.get(f"{emu.url}/v1/whoami", headers={"Authorization": f"Bearer {admin.secret}"})

Modules: ``faults`` (the knobs and how they are applied), ``state`` (accounts, keys,
counters), ``envelope`` (wire format), ``api`` (the ``/v1`` routes and the fault
pipeline), ``control`` (``/_emulator/`` endpoints), ``server`` (HTTP and lifecycle),
``cli`` (``rotator emulator``).
"""

from __future__ import annotations

from rotator.emulator.faults import EmulatorSettings
from rotator.emulator.server import Emulator, SeededAccount

__all__ = ["Emulator", "EmulatorSettings", "SeededAccount"]
