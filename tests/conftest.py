"""Shared fixtures: real OpenBao, the Count emulator and SQL databases (SQLite and PostgreSQL)."""

from collections.abc import Iterator

import pytest
import structlog

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
