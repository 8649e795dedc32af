"""``[database] password_file``: rotator reads PostgreSQL's password from a file itself
(libpq ignores a group-readable PGPASSFILE, and every file a Kubernetes Secret mounts is)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rotator.app.database import database_engine
from rotator.cli.main import main
from rotator.config.model import load_config
from rotator.core.errors import ConfigError
from tests.support import DATABASE_ONLY_CONFIG

PASSWORD = "pg-S3CRET-from-a-file-0042"


def _config(tmp_path: Path, url: str, password_file: Path) -> Path:
    path = tmp_path / "rotator.toml"
    path.write_text(DATABASE_ONLY_CONFIG.format(url=url).replace(
        "[vault]", f'password_file = "{password_file}"\n[vault]'))
    return path


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_password_file_is_what_the_driver_logs_in_with(
        database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret = tmp_path / "db-password"
    secret.write_text(f"{PASSWORD}\n")
    secret.chmod(0o440)        # as a Secret mounts it: libpq would ignore it as a passfile
    config = _config(tmp_path, database_url, secret)
    engine = database_engine(load_config(config))
    try:
        with engine.connect() as conn:
            assert conn.connection.driver_connection.info.password == PASSWORD
    finally:
        engine.dispose()
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    assert main(["db", "current", "--config", str(config)]) == 0
    assert PASSWORD not in str(capsys.readouterr())


def test_an_unreadable_password_file_is_exit_2_naming_the_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, "postgresql+psycopg://rotator@127.0.0.1:1/rotator",
                     tmp_path / "missing")
    assert main(["db", "upgrade", "--config", str(config)]) == 2
    assert "database.password_file: cannot read" in capsys.readouterr().err


def test_a_password_file_for_sqlite_is_exit_2_naming_the_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, f"sqlite:///{tmp_path / 'x.db'}", tmp_path / "pw")
    assert main(["db", "upgrade", "--config", str(config)]) == 2
    assert "database.password_file: is for PostgreSQL" in capsys.readouterr().err


URLS_WITH_A_PASSWORD = [
    f"postgresql+psycopg://rotator:{PASSWORD}@db.internal:5432/rotator",
    f"postgresql://rotator:{PASSWORD}@db.internal/rotator?sslmode=verify-full",
    f"postgresql+psycopg://rotator@db.internal/rotator?sslmode=verify-full&password={PASSWORD}",
]


@pytest.mark.parametrize("url", URLS_WITH_A_PASSWORD)
def test_a_database_url_with_a_password_is_a_config_error_naming_password_file(
        tmp_path: Path, url: str) -> None:
    path = tmp_path / "rotator.toml"
    path.write_text(DATABASE_ONLY_CONFIG.format(url=url))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert list(caught.value.problems) == ["database.url"]
    assert "password_file" in caught.value.problems["database.url"]
    assert "(line 3)" in caught.value.problems["database.url"]
    assert PASSWORD not in str(caught.value) and "db.internal" not in str(caught.value)


@pytest.mark.parametrize("url", ["postgresql+psycopg://rotator@db.internal:5432/rotator",
                                 "postgresql+psycopg://db.internal/rotator?sslmode=verify-full"])
def test_a_database_url_with_a_user_only_is_accepted(tmp_path: Path, url: str) -> None:
    path = tmp_path / "rotator.toml"
    path.write_text(DATABASE_ONLY_CONFIG.format(url=url))
    assert load_config(path).database.url == url


def test_check_config_refuses_a_database_url_with_a_password_without_echoing_it(
        tmp_path: Path) -> None:
    path = tmp_path / "rotator.toml"
    path.write_text(DATABASE_ONLY_CONFIG.format(url=URLS_WITH_A_PASSWORD[0]))
    result = subprocess.run([sys.executable, "-m", "rotator", "check-config", str(path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert "  database.url: must not carry a password" in result.stderr
    assert "[database] password_file (line 3)" in result.stderr
    output = result.stdout + result.stderr
    assert PASSWORD not in output and "db.internal" not in output
