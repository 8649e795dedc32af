"""The repository documents itself: what README and docs/ point at exists, and nothing else.

A test named in docs/architecture.md as the proof of an invariant must exist, and every
package of the tree must appear in the README's layout, so the docs cannot drift silently.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_no_document_points_outside_the_repository(doc: Path) -> None:
    for target in re.findall(r"\]\(([^)#]+)", _text(doc)):
        if "://" in target:
            continue
        resolved = (doc.parent / target).resolve()
        assert resolved.is_relative_to(ROOT), f"{doc.name} links outside: {target}"
        assert resolved.exists(), f"{doc.name} links to a missing file: {target}"


def test_no_module_docstring_points_outside_the_repository() -> None:
    for module in (ROOT / "rotator").rglob("*.py"):
        assert "../shared" not in _text(module), module


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(_text(path))
    return {node.name for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test")}


def test_every_test_the_architecture_cites_exists() -> None:
    text = _text(ROOT / "docs" / "architecture.md")
    cited = re.findall(r"`(tests/[\w/]+\.py)((?:::\w+)?)`", text)
    # "`::name`" right after a cited file names another test of the same file.
    cited += [(file, name) for file, names in
              re.findall(r"`(tests/[\w/]+\.py)::\w+`((?:, `::\w+`)+)", text)
              for name in re.findall(r"::\w+", names)]
    assert len(cited) > 10, "the invariants table cites its tests"
    for file, name in cited:
        path = ROOT / file
        assert path.is_file(), f"docs/architecture.md cites a missing file {file}"
        if name:
            assert name[2:] in _test_names(path), f"docs/architecture.md cites {file}{name}"


def test_the_readme_layout_names_every_package() -> None:
    layout = _text(ROOT / "README.md").split("## Layout", 1)[1]
    packages = sorted(p.parent.relative_to(ROOT).as_posix()
                      for p in (ROOT / "rotator").glob("*/__init__.py"))
    top_modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "rotator").glob("*.py")
                         if p.name not in ("__init__.py", "__main__.py"))
    for name in [*packages, *top_modules]:
        shown = name + "/" if not name.endswith(".py") else name
        assert f"`{shown}`" in layout, f"README's Layout does not show {shown}"
