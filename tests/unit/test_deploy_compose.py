"""deploy/compose.yaml: PostgreSQL speaks TLS with a certificate the stack makes itself,
rotator verifies it (``sslmode=verify-full``) against the CA alone, and every password is
a file. tests/integration/test_compose_db_tls.py runs the same script and settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.engine import make_url

from rotator.config.model import load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "compose"
ROTATOR_SERVICES = ("migrate", "rotator")      # the two that log in to PostgreSQL


def services() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    return loaded


def mounts(service: str) -> dict[str, tuple[str, bool]]:
    """Container path: (the volume or host path, read-only) of each of ``service``'s mounts."""
    out = {}
    for spec in services()[service].get("volumes", []):
        source, target, *mode = spec.split(":")
        out[target] = (source, mode == ["ro"])
    return out


def postgres_settings() -> dict[str, str]:
    command = services()["postgres"]["command"]
    assert command[0] == "postgres"
    pairs = command[1:]
    assert pairs[::2] == ["-c"] * (len(pairs) // 2)
    return dict(setting.split("=", 1) for setting in pairs[1::2])


def test_every_rotator_database_url_verifies_the_server_against_the_mounted_ca() -> None:
    urls = re.findall(r"postgresql[+a-z]*://[^\"'\s]+", "\n".join(
        path.read_text() for path in [DEPLOY / "compose.yaml", *COMPOSE.iterdir()]
        if path.is_file()))
    database = load_config(COMPOSE / "config.toml").database
    assert urls == [database.url]
    url = make_url(database.url)
    assert url.query["sslmode"] == "verify-full"
    assert url.host == "postgres" == services()["db-tls"]["environment"]["DB_TLS_HOSTNAME"]
    assert url.username is None and url.password is None      # PGUSER, password_file
    ca = Path(str(url.query["sslrootcert"]))
    for service in ROTATOR_SERVICES:
        assert mounts(service)[str(ca.parent)] == ("db-tls-ca", True), service


def test_the_ca_volume_holds_no_key_and_only_postgres_mounts_the_server_key() -> None:
    holders = {name: {source for source, _ in mounts(name).values()} for name in services()}
    assert {name for name, sources in holders.items() if "db-tls-ca" in sources} == \
        {"db-tls", *ROTATOR_SERVICES}
    assert {name for name, sources in holders.items() if "db-tls-server" in sources} == \
        {"db-tls", "postgres"}
    environment = services()["db-tls"]["environment"]
    assert mounts("db-tls")[environment["DB_TLS_CA_DIR"]] == ("db-tls-ca", False)
    assert mounts("db-tls")[environment["DB_TLS_SERVER_DIR"]] == ("db-tls-server", False)
    assert mounts("postgres")[environment["DB_TLS_SERVER_DIR"]] == ("db-tls-server", True)
    script = (COMPOSE / "make-db-tls.sh").read_text()
    assert '"$ca_dir/ca.crt' in script and '"$ca_dir/ca.key' not in script


def test_the_one_shot_makes_the_certificates_before_postgres_starts() -> None:
    db_tls, postgres = services()["db-tls"], services()["postgres"]
    assert postgres["depends_on"]["db-tls"] == {"condition": "service_completed_successfully"}
    assert db_tls["restart"] == "no" and "depends_on" not in db_tls
    assert db_tls["entrypoint"] == ["sh", "/db-tls/make-db-tls.sh"]
    assert mounts("db-tls")["/db-tls/make-db-tls.sh"] == ("./compose/make-db-tls.sh", True)


def test_postgres_serves_tls_with_the_made_certificate_and_the_compose_pg_hba() -> None:
    settings = postgres_settings()
    server_dir = services()["db-tls"]["environment"]["DB_TLS_SERVER_DIR"]
    assert settings["ssl"] == "on"
    assert settings["ssl_cert_file"] == f"{server_dir}/server.crt"
    assert settings["ssl_key_file"] == f"{server_dir}/server.key"
    assert mounts("postgres")[settings["hba_file"]] == ("./compose/pg_hba.conf", True)


def test_pg_hba_admits_rotator_roles_over_tls_only_and_rejects_the_rest() -> None:
    rules = [line.split() for line in (COMPOSE / "pg_hba.conf").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    network = [rule for rule in rules if rule[0] != "local"]
    admitting = [rule for rule in network if rule[-1] != "reject"]
    assert admitting == [["hostssl", "rotator", "rotator_owner,rotator,rotator_auditor",
                          "all", "scram-sha-256"]]
    assert network[-1] == ["host", "all", "all", "all", "reject"]
    assert [rule for rule in rules if rule[0] == "local"] == [
        ["local", "all", "postgres", "peer"]]


def test_every_password_is_a_file_never_the_environment() -> None:
    for path in [DEPLOY / "compose.yaml", *COMPOSE.iterdir()]:
        if path.is_file():
            assert "PGPASSWORD" not in path.read_text(), path
    database = load_config(COMPOSE / "config.toml").database
    for name, service in services().items():
        assert not any(key.endswith("PASSWORD") for key in service.get("environment", {})), name
    for service in ROTATOR_SERVICES:
        [secret] = services()[service]["secrets"]
        assert f"/run/secrets/{secret['target']}" == str(database.password_file), service
    assert services()["migrate"]["environment"]["PGUSER"] == "rotator_owner"
    assert services()["migrate"]["secrets"][0]["source"] == "db-owner-password"
    assert services()["rotator"]["environment"]["PGUSER"] == "rotator"
    assert services()["rotator"]["secrets"][0]["source"] == "db-password"
