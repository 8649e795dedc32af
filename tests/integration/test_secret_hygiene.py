"""After rotations, failures and a crash: no issued secret or Vault token appears in the
logs (debug level), the CLI output of any command, or a dump of the database."""

from __future__ import annotations

import pytest
from sqlalchemy import MetaData, select

from rotator.adapters.sql.schema import make_engine
from tests.integration.conftest import MakeWorld
from tests.integration.world import PROVIDER_KINDS

pytestmark = pytest.mark.integration


def dump_database(url: str) -> str:
    engine = make_engine(url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            return "\n".join(repr(row) for table in meta.sorted_tables
                             for row in conn.execute(select(table)))
    finally:
        engine.dispose()


@pytest.mark.parametrize("provider_kind", PROVIDER_KINDS)
def test_no_secret_anywhere(make_world: MakeWorld) -> None:
    w = make_world("one", "two", grace="0s", probe_timeout="500ms")
    calm = w.emulator.settings    # in the world's layout, Count's or alt
    outputs = []

    def run(*args: str, crash_at: str | None = None) -> None:
        result = w.cli(*args, crash_at=crash_at)
        outputs.extend([result.stdout, result.stderr])

    run("rotate", "--all")                                   # success
    run("rotate", "one", crash_at="vault_write:after")       # a crash mid-store
    run("rotate", "one", "--wait-lease", "5s")                # resume
    w.emulator.settings = calm.changed({"propagation_delay": 30})
    run("rotate", "two")                                     # verify fails, rollback
    w.emulator.settings = calm.changed({"error_rate": 0.3, "seed": 3})
    run("rotate", "two")                                     # 5xx along the way
    w.emulator.settings = calm
    run("rotate", "--all", "--dry-run")
    run("status")
    for fmt in ("table", "json", "csv"):
        run("audit", "--format", fmt)
    run("check-config", str(w.config_path))

    secrets = [*w.emulator.state.issued_secrets(), w.vault_token]
    assert len(secrets) >= 6
    haystacks = {"cli": "\n".join(outputs), "database": dump_database(w.db_url)}
    assert "rotation_step" in haystacks["cli"]               # debug logs were captured
    assert "rotation_id" in haystacks["database"] or "rot_" in haystacks["database"]
    for where, text in haystacks.items():
        leaked = [s[:6] + "…" for s in secrets if s in text]
        assert not leaked, f"{len(leaked)} secret(s) found in the {where}: {leaked}"
