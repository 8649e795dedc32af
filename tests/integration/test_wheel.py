"""The wheel, installed into a fresh venv away from the source tree, migrates a database.

The wheel is built once per module, from a copy of the files the Dockerfile copies, and
installed without its dependencies: they come from this venv's site-packages, added to the
new venv's path by a ``.pth`` line. Such a line only appends a folder to ``sys.path``; the
``.pth`` files inside it (the editable install's finder among them) are not run, so the
source tree cannot leak in — and ``test_the_installed_rotator_is_the_wheel`` checks it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from rotator import __version__
from rotator.adapters.sql.schema import current_revision, head_revision
from tests.support import DATABASE_ONLY_CONFIG

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# What the Dockerfile's build stage copies: the wheel must build from these alone.
BUILD_INPUTS = ("pyproject.toml", "README.md", "rotator", "migrations")



@dataclass(frozen=True)
class Venv:
    root: Path
    site_packages: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def rotator(self) -> Path:
        return self.root / "bin" / "rotator"


def _run(argv: list[str | Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    # Nothing from this process may point the child at the source tree or this venv.
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "ROTATOR_CONFIG"}}
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A copy, not the repository: building in place leaves build/ and *.egg-info behind, and
    # a stale build/lib would put deleted modules into the wheel.
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_INPUTS:
        origin = REPO / name
        if origin.is_dir():
            shutil.copytree(origin, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(origin, source / name)
    dist = tmp_path_factory.mktemp("dist")
    _ok(_run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
              "--no-index", "--wheel-dir", dist, source], cwd=dist))
    [built] = dist.glob("rotator-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    root = tmp_path_factory.mktemp("venv")
    _ok(_run([sys.executable, "-m", "venv", "--without-pip", root], cwd=root))
    python = root / "bin" / "python"
    site_packages = Path(_ok(_run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root,
    )).strip())
    _ok(_run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
              "--no-index", wheel], cwd=root))
    (site_packages / "_rotator_test_deps.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n")
    return Venv(root, site_packages)


def _wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {n for n in archive.namelist() if ".dist-info/" not in n}


def _tree(folder: Path, prefix: str) -> set[str]:
    return {
        f"{prefix}/{path.relative_to(folder).as_posix()}"
        for path in folder.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_the_wheel_holds_every_module_and_the_migrations(wheel: Path) -> None:
    # pyproject.toml lists the packages by hand: a new subpackage missing there fails here.
    assert _wheel_names(wheel) == (
        _tree(REPO / "rotator", "rotator") | _tree(REPO / "migrations", "rotator/migrations")
    )


def test_the_installed_rotator_is_the_wheel(venv: Venv, tmp_path: Path) -> None:
    out = _ok(_run([venv.python, "-c",
                    "import importlib.resources as r, rotator;"
                    " print(rotator.__file__); print(r.files('rotator.migrations'))"],
                   cwd=tmp_path))
    module, migrations = (Path(line) for line in out.splitlines())
    assert module == venv.site_packages / "rotator" / "__init__.py"
    assert migrations == venv.site_packages / "rotator" / "migrations"


def test_python_m_rotator_prints_the_version(venv: Venv, tmp_path: Path) -> None:
    out = _ok(_run([venv.python, "-m", "rotator", "--version"], cwd=tmp_path))
    assert out.strip() == f"rotator {__version__}"


def test_db_upgrade_and_current_from_the_wheel(venv: Venv, database_url: str,
                                               tmp_path: Path) -> None:
    config = tmp_path / "rotator.toml"
    config.write_text(DATABASE_ONLY_CONFIG.format(url=database_url))
    head = head_revision()
    upgraded = _ok(_run([venv.rotator, "db", "upgrade", "--config", config], cwd=tmp_path))
    assert upgraded.strip() == f"database schema at {head}"
    current = _ok(_run([venv.rotator, "db", "current", "--config", config], cwd=tmp_path))
    assert current.strip() == f"database schema at {head}; this rotator needs {head}"
    assert current_revision(database_url) == head
