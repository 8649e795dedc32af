"""Shared fixtures: real OpenBao, the Count emulator and SQL databases (SQLite and PostgreSQL)."""

pytest_plugins = [
    "tests.fixtures.openbao",
    "tests.fixtures.emulator",
    "tests.fixtures.databases",
]
