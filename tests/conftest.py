"""Shared fixtures: real OpenBao, the Count emulator and SQL databases (SQLite and PostgreSQL)."""

from collections.abc import Iterator

import pytest
import structlog

from rotator import redaction

pytest_plugins = [
    "tests.fixtures.openbao",
    "tests.fixtures.emulator",
    "tests.fixtures.databases",
    "tests.fixtures.bao_agent",
]


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Each test starts from structlog's defaults, whatever the last one configured."""
    yield
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _empty_secret_registry() -> Iterator[None]:
    """Each test starts with nothing registered for redaction: a value one test registered
    (a token set in the environment, say) would mask another test's output."""
    yield
    with redaction._lock:
        for registry in (redaction._keys, redaction._pinned, redaction._deleted):
            registry.clear()
        redaction._scan_order = None
