"""Secret hygiene everywhere, on one world (real OpenBao, the emulator, SQLite or
PostgreSQL): every CLI command at debug level in JSON and console log formats, the daemon
(``run --once`` and a long-running ``run`` with its ``/metrics``, ``/readyz`` and
``/healthz``), successes and failures (5xx on every call, a key that never propagates,
a Vault token that is refused), then a dump of every table. No issued key, no management
key and no Vault token may appear in any of it; the fingerprints of the keys must. Run
with Count's provider and with a ``type = "http"`` one driving the alt-layout emulator.

tests/integration/test_secret_hygiene.py covers crashes and resumes through ``rotate``;
this covers the rest of the surface.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from rotator.adapters.sql.schema import make_engine
from rotator.core.secret import fingerprint
from tests.integration.conftest import MakeWorld
from tests.integration.daemon_process import Daemon, daemon_config, metric, wait_for
from tests.integration.world import PROVIDER_KINDS, World

pytestmark = pytest.mark.integration


def dump_every_table(url: str) -> str:
    """Every row of every table the database's catalog lists, column by column."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                names = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'"))
            else:
                names = conn.execute(text(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = current_schema()"))
            lines = []
            for table in names.scalars().all():
                result = conn.execute(text(f'SELECT * FROM "{table}"'))
                columns = list(result.keys())
                lines += [f"{table}: " + ", ".join(f"{c}={v!s}" for c, v in zip(columns, row,
                                                                                  strict=True))
                          for row in result.all()]
            return "\n".join(lines)
    finally:
        engine.dispose()


class Outputs:
    """Runs commands and keeps everything they print, by label."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.texts: dict[str, str] = {}

    def cli(self, label: str, *args: str, fmt: str = "json", code: int | None = 0,
            env: dict[str, str] | None = None,
            config: Path | None = None) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "rotator", "--config",
                str(config or self.world.config_path), "--log-format", fmt,
                "--log-level", "debug", *args]
        result = subprocess.run(argv, env={**self.world.env, **(env or {})},
                                capture_output=True, text=True, timeout=60, check=False)
        self.texts[f"{label} ({fmt}) stdout"] = result.stdout
        self.texts[f"{label} ({fmt}) stderr"] = result.stderr
        if code is not None:
            assert result.returncode == code, (label, result.returncode, result.stdout,
                                               result.stderr[-3000:])
        return result

    def scrape(self, label: str, daemon: Daemon) -> None:
        for path in ("/metrics", "/readyz", "/healthz"):
            response = daemon.get(path)
            self.texts[f"{label} {path} headers"] = str(dict(response.headers))
            self.texts[f"{label} {path}"] = response.text


def _completed(world: World, target: str) -> int:
    repo = world.repository()
    try:
        return sum(r.status.value == "completed" for r in repo.rotations(target))
    finally:
        repo.engine.dispose()


# About thirty processes, one after the other: a minute on a loaded machine, and CI has
# seen past two (the suite's 120 s default).
@pytest.mark.timeout(300)
@pytest.mark.parametrize("provider_kind", PROVIDER_KINDS)
def test_no_secret_in_any_output_log_metric_or_table(make_world: MakeWorld) -> None:
    w = make_world("one", "two", "three", grace="0s", probe_timeout="500ms")
    out = Outputs(w)
    calm = w.emulator.settings    # in the world's layout, Count's or alt
    wrong_token = f"root-{secrets.token_hex(16)}"

    # The database and config commands.
    out.cli("db current", "db", "current")
    out.cli("db upgrade", "db", "upgrade", fmt="console")
    out.cli("check-config", "check-config", str(w.config_path))
    out.cli("check-config", "check-config", str(w.config_path), fmt="console")
    # Plans, then rotations that succeed, one target at a time and all together.
    out.cli("dry run", "rotate", "--all", "--dry-run")
    out.cli("dry run", "rotate", "--all", "--dry-run", fmt="console")
    out.cli("rotate one", "rotate", "one")
    out.cli("rotate two", "rotate", "two", fmt="console")
    out.cli("rotate all", "rotate", "--all")
    # Failures: 5xx on every call (retried, then refused), a key that never authenticates
    # in time (rolled back), a Vault token Vault refuses.
    w.emulator.settings = calm.changed({"error_rate": 1.0, "seed": 5})
    out.cli("rotate with 5xx", "rotate", "three", fmt="console", code=1)
    out.cli("dry run with 5xx", "rotate", "three", "--dry-run", code=1)
    w.emulator.settings = calm.changed({"propagation_delay": 30})
    out.cli("rotate never propagates", "rotate", "three", code=1)
    w.emulator.settings = calm
    out.cli("rotate with a refused token", "rotate", "one", code=1,
            env={"IT_VAULT_TOKEN": wrong_token})
    out.cli("status with a refused token", "status", code=None,
            env={"IT_VAULT_TOKEN": wrong_token}, fmt="console")

    # The daemon, once: rotates everything and exits.
    once_config, _ = daemon_config(w, "once")
    out.cli("run --once", "run", "--once", "--rotate-all", config=once_config)

    # The daemon, running: a rotation that completes, scraped; then, in a second daemon
    # logging to the console, one that rolls back, scraped.
    config, port = daemon_config(w, "d1")
    before = _completed(w, "one")
    first = Daemon(w, config, port, "--rotate", "one", name="first")
    try:
        first.wait_ready()
        wait_for(lambda: _completed(w, "one") == before + 1, 30, "the daemon's rotation")
        wait_for(lambda: metric(first.metrics(), "rotator_rotations_in_flight") == 0, 10,
                 "nothing in flight")
        out.scrape("first daemon", first)
        assert first.terminate()[0] == 0
    finally:
        first.close()
    out.texts["first daemon log"] = first.logs()

    w.emulator.settings = calm.changed({"propagation_delay": 30})
    second = Daemon(w, config, port, "--rotate", "two", "--log-format", "console",
                    name="second")
    try:
        second.wait_ready()
        wait_for(lambda: metric(second.metrics(), "rotator_rotations_rolled_back_total",
                                target="two", reason="verify") == 1, 30, "the rollback")
        out.scrape("second daemon", second)
        assert second.terminate()[0] == 0
    finally:
        second.close()
        w.emulator.settings = calm
    out.texts["second daemon log"] = second.logs()

    # Reading the history, and the database itself.
    out.cli("status", "status")
    out.cli("status", "status", fmt="console")
    out.cli("reconcile", "reconcile", "--fix", code=None)
    for fmt in ("table", "json", "csv"):
        out.cli(f"audit {fmt}", "audit", "--format", fmt)
    out.cli("audit one", "audit", "one", "--format", "json", "--since", "1d")
    out.texts["database"] = dump_every_table(w.db_url)

    # The haystacks hold what they should: debug lines, both formats, the failures...
    logs = "\n".join(v for k, v in out.texts.items() if "stderr" in k or k.endswith(" log"))
    assert '"level": "debug"' in logs and "[debug" in logs
    assert "rotation_step" in logs and "rotation_rolled_back" in logs
    assert "vault_token_renewal_failed" in logs and "rotation_completed" in logs
    assert '"event": "daemon_started"' in out.texts["first daemon log"]
    assert "daemon_started" in out.texts["second daemon log"]
    assert "rotator_rotations_completed_total" in out.texts["first daemon /metrics"]
    assert "rotator_rotations_rolled_back_total" in out.texts["second daemon /metrics"]
    assert out.texts["first daemon /readyz"].startswith("{")
    # ...and real data: each key now in Vault, and the one rolled back, by fingerprint.
    audit = out.texts["audit json (json) stdout"] + out.texts["audit csv (json) stdout"]
    for name in ("one", "two", "three"):
        _, served, _ = w.vault_secret(name)
        assert fingerprint(served) in audit, name
        assert fingerprint(served) in out.texts["database"], name
    issued = w.emulator.state.issued_secrets()
    served_now = {w.vault_secret(n)[1] for n in ("one", "two", "three")}
    assert any(fingerprint(s) in out.texts["database"] for s in issued if s not in served_now)

    secrets_ = [*issued, w.admin.secret, w.vault_token, wrong_token]
    assert len(issued) >= 12, len(issued)
    for where, haystack in out.texts.items():
        leaked = [s[:8] + "…" for s in secrets_ if s in haystack]
        assert not leaked, f"{len(leaked)} secret(s) in {where}: {leaked}"
