"""``/readyz``: is the database reachable at this code's schema, and is Vault authenticated?

Each check is one bounded attempt (no retries: a probe must answer quickly), and the
answer is cached briefly so that several probes and scrapes do not stampede Vault.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from rotator.adapters.sql.schema import check_schema
from rotator.core.errors import SchemaError

__all__ = ["Readiness", "ReadyReport"]


@dataclass(frozen=True, slots=True)
class ReadyReport:
    ready: bool
    checks: dict[str, str]        # check name -> "ok" or what is wrong (never a secret)


class Readiness:
    def __init__(self, engine: Engine, vault_ready: Callable[[], bool],
                 cache_seconds: float = 2.0,
                 more: Mapping[str, Callable[[], str]] | None = None) -> None:
        self._engine = engine
        self._vault_ready = vault_ready
        self._more = dict(more or {})
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._last: tuple[float, ReadyReport] | None = None

    def check(self) -> ReadyReport:
        with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last[0] < self._cache_seconds:
                return self._last[1]
            report = self._check_now()
            self._last = (time.monotonic(), report)
            return report

    def _check_now(self) -> ReadyReport:
        checks = {"database": self._database(), "vault": self._vault()}
        checks |= {name: check() for name, check in self._more.items()}
        return ReadyReport(all(v == "ok" for v in checks.values()), checks)

    def _database(self) -> str:
        try:
            check_schema(self._engine)
        except SchemaError as exc:
            return exc.message
        except SQLAlchemyError as exc:
            # The driver's class name only: its message may quote the connection string.
            cause = getattr(exc, "orig", None) or exc
            return f"unreachable ({type(cause).__name__})"
        return "ok"

    def _vault(self) -> str:
        return "ok" if self._vault_ready() else "unreachable, sealed or not authenticated"
