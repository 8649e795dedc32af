"""``rotator run``: the long-running service (schedules, replicas, health, metrics).

    run.py        the process: start-up checks, signals, shutdown within a deadline
    sweep.py      one pass over SQL: what is due, in flight or queued, and doing it
    planner.py    per target, from SQL facts and the schedule: start, resume, clean, wait
    workers.py    a bounded set of threads, one target each, and the lease heartbeat
    readiness.py  database, schema and Vault checks behind /readyz
    http.py       /healthz, /readyz and /metrics
    metrics.py    the Prometheus metrics
"""

from __future__ import annotations

__all__: list[str] = []
