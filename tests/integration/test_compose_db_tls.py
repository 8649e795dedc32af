"""deploy/compose's PostgreSQL over TLS, proven without Docker.

A cluster of this module's own (tests/integration/pg_cluster.py) gets what the compose
stack gives its postgres service: the certificate deploy/compose/make-db-tls.sh makes
(run as the `db-tls` one-shot is, with its environment), the ``-c`` settings of the
service's command and its pg_hba.conf (the container paths mapped to here), and the roles
and passwords of deploy/compose/init-roles.sh. Then rotator, with the compose config's
[database] url, migrates as the owner and rotates as the runtime role over verify-full,
and every connection TLS or pg_hba should refuse fails (`rotator db current`: exit 3,
saying why, never the password).

One difference: the image runs init-roles.sh with the compose pg_hba.conf already in
force (as the superuser, by peer authentication on the socket). The superuser here is
not always the OS user, so the cluster first starts with initdb's trust-on-the-socket
for that script, then restarts with the compose settings for everything else.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.engine import make_url

from rotator.adapters.sql.schema import make_engine
from rotator.config.model import load_config
from rotator.core.model import Status
from rotator.core.secret import Secret
from rotator.emulator import Emulator
from tests.fixtures.openbao import OpenBao
from tests.integration.pg_cluster import SUPERUSER, Cluster
from tests.integration.world import build_world
from tests.support import DATABASE_ONLY_CONFIG

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "compose"
# The compose secrets, as `migrate` and `rotator` mount them (compose.yaml's secrets:).
OWNER_PASSWORD = (COMPOSE / "db-owner-password").read_text().strip()
RUNTIME_PASSWORD = (COMPOSE / "db-password").read_text().strip()


def _services() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    return loaded


def _make_db_tls(ca_dir: Path, server_dir: Path, key_owner: str) -> None:
    """make-db-tls.sh with the `db-tls` service's environment, its two volumes here."""
    environment = {**_services()["db-tls"]["environment"], "DB_TLS_CA_DIR": str(ca_dir),
                   "DB_TLS_SERVER_DIR": str(server_dir), "DB_TLS_KEY_OWNER": key_owner}
    made = subprocess.run(["sh", str(COMPOSE / "make-db-tls.sh")],
                          env={**os.environ, **environment}, capture_output=True, text=True,
                          timeout=60, check=False)
    assert made.returncode == 0, made.stderr


def _postgres_settings(here: dict[str, Path]) -> dict[str, str]:
    """The ``-c`` settings of the postgres service, each container path mapped through
    ``here`` (a mount's source: where that volume or file is for this cluster)."""
    service = _services()["postgres"]
    mounts = {}
    for spec in service["volumes"]:
        source, target, *_ = spec.split(":")
        mounts[target] = source
    command = service["command"]
    settings = {}
    for setting in command[2::2]:
        name, value = setting.split("=", 1)
        for target, source in mounts.items():
            if value.startswith(target + "/") or value == target:
                value = str(here[source]) + value.removeprefix(target)
        settings[name] = value
    return settings


@dataclass(frozen=True)
class Stack:
    cluster: Cluster
    ca: Path              # ca.crt, as rotator mounts it

    def url(self, *, user: str | None = None, host: str = "postgres", ca: Path | None = None,
            sslmode: str | None = None) -> str:
        """The compose config's [database] url, pointed at this cluster: libpq connects to
        127.0.0.1 (``hostaddr``) and checks the certificate against ``host``, the name the
        compose stack connects with (a name, so verify-full's host check is the real one).
        No ``user``: libpq's PGUSER, as in the compose stack; ``sslmode``: the config's."""
        url = make_url(load_config(COMPOSE / "config.toml").database.url)
        query = {**url.query, "sslrootcert": str(ca or self.ca), "hostaddr": "127.0.0.1"}
        if sslmode is not None:
            query["sslmode"] = sslmode
        return url.set(username=user, host=host, port=self.cluster.port,
                       query=query).render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    cluster = Cluster()
    try:
        ca_dir = tmp_path_factory.mktemp("db-tls-ca")
        server_dir = cluster.root / "db-tls-server"
        _make_db_tls(ca_dir, server_dir, cluster.owner.pw_name)
        hba = cluster.root / "pg_hba.conf"      # the very file, where the server may read it
        shutil.copyfile(COMPOSE / "pg_hba.conf", hba)
        settings = _postgres_settings({"db-tls-server": server_dir,
                                       "./compose/pg_hba.conf": hba})

        cluster.start({})
        environment = {
            **os.environ, "PGHOST": str(cluster.root), "PGPORT": str(cluster.port),
            "POSTGRES_USER": SUPERUSER, "POSTGRES_DB": "rotator",
            "ROTATOR_ROLES_SQL": str(DEPLOY / "postgres" / "roles.sql"),
            "ROTATOR_DB_SECRETS": str(COMPOSE)}
        for command in (["psql", "-X", "-q", "-U", SUPERUSER, "-d", "postgres",
                         "-c", "CREATE DATABASE rotator"],
                        ["sh", str(COMPOSE / "init-roles.sh")]):
            done = subprocess.run(command, env=environment, capture_output=True, text=True,
                                  timeout=60, check=False)
            assert done.returncode == 0, done.stderr
        cluster.stop()

        cluster.start(settings)
        yield Stack(cluster, ca_dir / "ca.crt")
    finally:
        cluster.close()


def _connects_as(url: str, password: str) -> tuple[str, bool, str]:
    """(current_user, TLS in use, its version) of a session on ``url``."""
    engine = make_engine(url, Secret(password))
    try:
        with engine.connect() as conn:
            row = conn.execute(text(
                "SELECT current_user, ssl, version FROM pg_stat_ssl"
                " WHERE pid = pg_backend_pid()")).one()
    finally:
        engine.dispose()
    return row[0], row[1], row[2]


def test_rotator_migrates_as_the_owner_and_rotates_as_the_runtime_role_over_verify_full(
        stack: Stack, emulator: Emulator, openbao: OpenBao, vault_mount: str,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = stack.url()
    world = build_world(emulator, openbao.url, openbao.root_token, vault_mount, url,
                        tmp_path, ("app",))
    # As compose.yaml mounts them: each one-shot or daemon its own role's password, at the
    # one path the config's password_file names; the user from PGUSER.
    configs = {}
    for service, password in (("migrate", OWNER_PASSWORD), ("rotator", RUNTIME_PASSWORD)):
        secret = tmp_path / service / "rotator-db-password"
        secret.parent.mkdir()
        secret.write_text(password + "\n")
        config = tmp_path / service / "config.toml"
        config.write_text(world.config_path.read_text().replace(
            f'url = "{url}"\n', f'url = "{url}"\npassword_file = "{secret}"\n', 1))
        configs[service] = config
    world.config_path = configs["rotator"]
    assert "PGPASSWORD" not in os.environ

    migrated = subprocess.run(
        [sys.executable, "-m", "rotator", "db", "upgrade", "--config", str(configs["migrate"])],
        env={**os.environ, "PGUSER": "rotator_owner"}, capture_output=True, text=True,
        timeout=120, check=False)
    assert migrated.returncode == 0, migrated.stderr[-3000:]

    monkeypatch.setenv("PGUSER", "rotator")
    rotated = world.cli("rotate", "app", "--reason", "compose TLS")
    assert rotated.returncode == 0, rotated.stderr[-3000:]
    verified = world.cli("verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr[-3000:]
    world.db_password = Secret(RUNTIME_PASSWORD)
    assert [r.status for r in world.rotations("app")] == [Status.COMPLETED]
    world.assert_invariants("app")
    for output in (migrated, rotated, verified):
        assert OWNER_PASSWORD not in output.stdout + output.stderr
        assert RUNTIME_PASSWORD not in output.stdout + output.stderr

    assert _connects_as(url, RUNTIME_PASSWORD) == ("rotator", True, "TLSv1.3")
    engine = make_engine(url, Secret(RUNTIME_PASSWORD))
    try:
        with engine.connect() as conn:
            owner = conn.execute(text("SELECT tableowner FROM pg_tables"
                                      " WHERE tablename = 'rotation_events'")).scalar_one()
    finally:
        engine.dispose()
    assert owner == "rotator_owner"      # the migration ran as the owner


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CA of another run of make-db-tls.sh: valid, same host name, not the server's."""
    ca_dir = tmp_path_factory.mktemp("other-ca")
    _make_db_tls(ca_dir, tmp_path_factory.mktemp("other-server"), "root")
    return ca_dir / "ca.crt"


@pytest.mark.parametrize(("case", "expected"), [
    ("a CA that did not sign the server's certificate", "certificate verify failed"),
    ("a host name the certificate does not name",
     'server certificate for "postgres" does not match host name "localhost"'),
    ("no TLS", 'pg_hba.conf rejects connection for host "127.0.0.1", user "rotator", '
               'database "rotator", no encryption'),
    ("the superuser, over verified TLS", 'pg_hba.conf rejects connection for host '
                                         '"127.0.0.1", user "postgres", database "rotator"'),
])
def test_the_connections_tls_or_pg_hba_must_refuse_are_refused(
        stack: Stack, other_ca: Path, tmp_path: Path, case: str, expected: str) -> None:
    if case.startswith("a CA"):
        url = stack.url(user="rotator", ca=other_ca)
    elif case.startswith("a host name"):
        url = stack.url(user="rotator", host="localhost")
    elif case == "no TLS":
        url = stack.url(user="rotator", sslmode="disable")
    else:
        url = stack.url(user=SUPERUSER)
    secret = tmp_path / "rotator-db-password"
    secret.write_text(RUNTIME_PASSWORD + "\n")
    config = tmp_path / "rotator.toml"
    config.write_text(DATABASE_ONLY_CONFIG.format(url=url).replace(
        "[vault]", f'password_file = "{secret}"\n[vault]', 1))
    refused = subprocess.run(
        [sys.executable, "-m", "rotator", "db", "current", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert expected in refused.stderr, case
    assert RUNTIME_PASSWORD not in refused.stdout + refused.stderr
    # With the right CA, name and role the same password connects: each refusal above is
    # for the one thing its case changed.
    assert _connects_as(stack.url(user="rotator"), RUNTIME_PASSWORD)[:2] == ("rotator", True)


def test_make_db_tls_keeps_its_ca_on_a_rerun_and_leaves_no_ca_key(tmp_path: Path) -> None:
    ca_dir, server_dir = tmp_path / "ca", tmp_path / "server"
    _make_db_tls(ca_dir, server_dir, "root")
    first = (ca_dir / "ca.crt").read_bytes(), (server_dir / "server.crt").read_bytes()
    _make_db_tls(ca_dir, server_dir, "root")        # `up` again: the same CA and certificate
    assert ((ca_dir / "ca.crt").read_bytes(), (server_dir / "server.crt").read_bytes()) == first
    assert sorted(p.name for p in ca_dir.iterdir()) == ["ca.crt"]
    assert sorted(p.name for p in server_dir.iterdir()) == ["server.crt", "server.key"]
    assert (server_dir / "server.key").stat().st_mode & 0o777 == 0o600
    assert server_dir.stat().st_mode & 0o777 == 0o700
    assert b"PRIVATE KEY" not in (ca_dir / "ca.crt").read_bytes()

    (server_dir / "server.crt").write_bytes((ca_dir / "ca.crt").read_bytes())   # not for "postgres"
    _make_db_tls(ca_dir, server_dir, "root")
    assert (ca_dir / "ca.crt").read_bytes() != first[0]     # made anew, CA and all
