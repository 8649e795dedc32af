"""Integration fixtures: a ``world`` on real OpenBao, the emulator, and SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from rotator.emulator import Emulator
from tests.fixtures.openbao import OpenBao
from tests.integration.world import World, build_world

MakeWorld = Callable[..., World]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The generic provider on SQLite only: its adapter never touches SQL, and every path
    these tests take through SQL runs on both databases with Count. (The pairs http x
    PostgreSQL cost the suite some two minutes and proved nothing the others do not.)"""
    kept, dropped = [], []
    for item in items:
        params = getattr(item, "callspec", None)
        both = params is not None and params.params.get("provider_kind") == "http" \
            and params.params.get("database_url") == "postgresql"
        (dropped if both else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture
def provider_kind() -> str:
    """The provider a world's config drives: Count's adapter. A test runs on both with
    ``@pytest.mark.parametrize("provider_kind", PROVIDER_KINDS)``."""
    return "count"


@pytest.fixture
def make_world(emulator: Emulator, openbao: OpenBao, vault_mount: str, migrated_url: str,
               tmp_path: Path, provider_kind: str) -> MakeWorld:
    def make(*names: str, **kw: object) -> World:
        kw.setdefault("provider_kind", provider_kind)
        return build_world(emulator, openbao.url, openbao.root_token, vault_mount,
                           migrated_url, tmp_path, names or ("app",), **kw)  # type: ignore[arg-type]
    return make
