"""``[database] password_file``: rotator reads PostgreSQL's password from a file itself
(libpq ignores a group-readable PGPASSFILE, and every file a Kubernetes Secret mounts is)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rotator.app.database import database_engine
from rotator.cli.main import main
from rotator.config.model import load_config
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
