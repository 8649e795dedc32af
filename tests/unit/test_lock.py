"""requirements.lock pins every runtime dependency of pyproject.toml, with hashes, inside
its range; and the Dockerfile installs from it only (``make lock`` refreshes it)."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?:\s*\\\n\s*--hash=sha256:[0-9a-f]{64})*)",
                 re.MULTILINE)


def locked() -> dict[str, tuple[str, int]]:
    """Each pinned name -> its version and how many hashes it has."""
    text = (ROOT / "requirements.lock").read_text()
    return {canonicalize_name(name): (version, hashes.count("--hash=sha256:"))
            for name, version, hashes in PIN.findall(text)}


def runtime() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(spec) for spec in project["dependencies"]]


def extras_of(requirement: Requirement) -> list[Requirement]:
    """What ``name[extra]`` adds, from the installed distribution's metadata."""
    try:
        declared = requires(requirement.name) or []
    except PackageNotFoundError:
        return []
    added = []
    for spec in map(Requirement, declared):
        for extra in requirement.extras:
            if spec.marker is not None and spec.marker.evaluate(
                    {**default_environment(), "extra": extra}):
                added.append(spec)
    return added


def test_the_lock_pins_every_runtime_dependency_with_hashes_inside_its_range() -> None:
    pins = locked()
    wanted = runtime()
    wanted += [extra for requirement in wanted for extra in extras_of(requirement)]
    assert any(canonicalize_name(r.name) == "psycopg-binary" for r in wanted)  # extras seen
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"requirements.lock misses {name}: run `make lock`"
        version, hashes = pins[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements.lock pins {name}=={version}, outside {requirement.specifier}: "
            "run `make lock`")
        assert hashes >= 1, f"requirements.lock has no hash for {name}"


def test_every_pin_of_the_lock_has_a_hash() -> None:
    text = (ROOT / "requirements.lock").read_text()
    entries = re.findall(r"^[A-Za-z0-9][^\s#]*==", text, re.MULTILINE)
    pins = locked()
    assert len(entries) == len(pins) > 10
    assert all(hashes >= 1 for _, hashes in pins.values())


def test_every_dependency_in_pyproject_has_an_upper_bound() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    specs = [*pyproject["build-system"]["requires"], *pyproject["project"]["dependencies"]]
    for group in pyproject["project"]["optional-dependencies"].values():
        specs += group
    unbounded = [spec for spec in specs
                 if not any(s.operator in {"<", "<=", "==", "~="}
                            for s in Requirement(spec).specifier)]
    assert unbounded == []


def test_the_dockerfile_installs_the_lock_with_hashes_and_the_wheel_without_deps() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"pip install --require-hashes [^\n]*\\\n\s*-r /tmp/requirements\.lock",
                     dockerfile)
    assert "pip install --no-deps /tmp/dist/rotator-*.whl" in dockerfile
    assert "@sha256:<digest>" in dockerfile   # where to pin the base image by digest
