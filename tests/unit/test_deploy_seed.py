"""deploy/compose/seed.py writes its secret files private from the moment they exist."""

from __future__ import annotations

import importlib.util
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

SEED = Path(__file__).resolve().parents[2] / "deploy" / "compose" / "seed.py"


@pytest.fixture
def seed() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compose_seed", SEED)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _permissive_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def test_secret_files_are_0600_from_creation_then_their_final_mode(
        seed: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    modes_before_chmod: dict[str, int] = {}
    chmod = Path.chmod

    def recording_chmod(self: Path, mode: int, **kwargs: object) -> None:
        # The last moment before the final mode: what the file has had since it exists.
        modes_before_chmod[self.name] = stat.S_IMODE(self.stat().st_mode)
        chmod(self, mode, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "chmod", recording_chmod)
    leftover = tmp_path / "count-management-key.tmp"
    leftover.write_text("from a crashed run")
    leftover.chmod(0o644)

    seed.write_file(tmp_path / "count-management-key", "cnt_secret\n", 0o400)
    seed.write_file(tmp_path / "rendered.toml", "[database]\n", 0o444)

    assert modes_before_chmod == {"count-management-key.tmp": 0o600, "rendered.toml.tmp": 0o600}
    assert stat.S_IMODE((tmp_path / "count-management-key").stat().st_mode) == 0o400
    assert (tmp_path / "count-management-key").read_text() == "cnt_secret\n"
    assert stat.S_IMODE((tmp_path / "rendered.toml").stat().st_mode) == 0o444
    assert not leftover.exists()
