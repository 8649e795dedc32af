"""A SQLite URL whose folder does not exist is a config error (exit 2) naming the key and
the folder, from every command that opens the database: never a traceback, nothing made.
The documented URLs are absolute (four slashes)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """
[database]
url = "sqlite:///{db}"
[vault]
url = "http://127.0.0.1:9"
[vault.auth]
method = "token"
token_env = "IT_TOKEN"
[providers.count]
type = "count"
base_url = "http://127.0.0.1:9"
management_key_env = "IT_KEY"
[targets.app]
provider = "count"
service_account = "sa_1"
vault_path = "rotator/app"
"""


@pytest.mark.parametrize("command", [["db", "upgrade"], ["db", "current"], ["status"],
                                     ["audit", "show"], ["verify"], ["run", "--once"]])
def test_a_missing_folder_is_exit_2_naming_it(tmp_path: Path, command: list[str]) -> None:
    folder = tmp_path / "not" / "made"
    config = tmp_path / "rotator.toml"
    config.write_text(CONFIG.format(db=folder / "rotator.db"))
    done = subprocess.run([sys.executable, "-m", "rotator", "-c", str(config), *command],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "IT_TOKEN": "t", "IT_KEY": "k"})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"database.url: no folder {folder} for the database file" in done.stderr
    assert not (tmp_path / "not").exists()


def test_the_documented_sqlite_urls_are_absolute() -> None:
    for doc in ("README.md", "config.example.toml"):
        urls = re.findall(r'"(sqlite:[^"]*)"', (ROOT / doc).read_text())
        assert urls, doc
        # "sqlite:///$WORK/...": README's set-up by hand, where WORK is an absolute path.
        assert all(url.startswith(("sqlite:////", "sqlite:///$WORK/")) for url in urls), (
            doc, urls)
    assert re.search(r"\bWORK=/", (ROOT / "README.md").read_text())
