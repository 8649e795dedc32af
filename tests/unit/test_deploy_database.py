"""deploy/ connects to PostgreSQL with verified TLS, a password file per role, and the
owner role in the migrating container only (never PGPASSWORD, never sslmode=require)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from rotator.config.model import load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBERNETES = DEPLOY / "kubernetes"


def test_the_kubernetes_config_verifies_the_server_and_reads_a_password_file() -> None:
    database = load_config(KUBERNETES / "config.toml").database
    url = make_url(database.url)
    assert url.query["sslmode"] == "verify-full"
    assert url.query["sslrootcert"] == "/etc/rotator-db-ca/ca.crt"
    assert url.username is None and url.password is None     # PGUSER, password_file
    assert str(database.password_file) == "/var/run/secrets/rotator-db/password"


@pytest.mark.parametrize("manifest", ["deployment.yaml", "cronjob.yaml"])
def test_only_the_init_container_logs_in_as_the_owner(manifest: str) -> None:
    text = (KUBERNETES / manifest).read_text()
    init, main = text.split("initContainers:", 1)[1].split("containers:", 1)
    assert re.search(r"name: PGUSER\b.*\n\s+value: rotator_owner\n", init)
    assert "name: db-owner-password" in init and "name: db-password " not in init
    assert re.search(r"name: PGUSER\b.*\n\s+value: rotator\n", main)
    mounts = main.split("volumes:", 1)[0]
    assert "name: db-password " in mounts and "db-owner-password" not in mounts


def test_no_deploy_file_passes_a_password_in_the_environment_or_trusts_any_server() -> None:
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert "PGPASSWORD" not in text, path
            assert "sslmode=require" not in text, path
