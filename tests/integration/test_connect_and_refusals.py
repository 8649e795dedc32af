"""``check-config --connect`` names what cannot be reached or read, and a rotation refused
before it changed anything keeps its audit row while ``rotate`` and ``status`` say what to
do next: all through the real command, on real OpenBao and the emulator."""

from __future__ import annotations

import pytest

from rotator.core.model import FailureCode, Status
from rotator.core.vocabulary import AuditAction
from tests.integration.conftest import MakeWorld
from tests.integration.pg_cluster import free_port
from tests.integration.world import World

pytestmark = pytest.mark.integration

# A target whose Vault path was never seeded, and one whose provider listens nowhere.
TROUBLE = """
[targets.nopath]
provider = "count"
service_account = "{sa}"
vault_mount = "{mount}"
vault_path = "count/nopath"

[targets.offline]
provider = "offline"
service_account = "{sa}"
vault_mount = "{mount}"
vault_path = "count/app"

[providers.offline]
type = "count"
base_url = "{dead_url}"
management_key_env = "IT_COUNT_ADMIN_KEY"
timeout = "1s"
[providers.offline.retry]
max_attempts = 1
"""


def _troubled(make_world: MakeWorld) -> tuple[World, str]:
    """A world whose "app" is fine, plus the two targets of ``TROUBLE``."""
    w = make_world("app", grace="0s")
    dead_url = f"http://127.0.0.1:{free_port()}"
    extra = TROUBLE.format(sa=w.accounts["app"].account_id, mount=w.mount, dead_url=dead_url)
    w.config_path.write_text(w.config_path.read_text() + extra)
    return w, dead_url


def _lines(text: str) -> dict[str, str]:
    """``check-config --connect``'s lines by subject: "ok" or "FAILED", then the detail."""
    rows = [line.split(None, 1) for line in text.splitlines()[1:]]
    return {rest.split(":", 1)[0]: f"{word} {rest.split(':', 1)[1].strip()}"
            for word, rest in rows}


def test_check_config_connect_names_each_failure(make_world: MakeWorld) -> None:
    w, dead_url = _troubled(make_world)
    secrets = [w.admin.secret, w.accounts["app"].secret, w.vault_token]

    result = w.cli_in_process("check-config", "--connect")
    assert result.returncode == 3, result.stdout + result.stderr
    lines = _lines(result.stdout)
    assert lines["vault"].startswith("ok logged in to Vault at ")
    assert lines["targets.app"].startswith(f"ok reads {w.mount}/count/app field 'api_key'")
    assert lines["targets.nopath"].startswith("FAILED no key at ")
    assert f"bao kv put -mount={w.mount} count/nopath api_key=@" in lines["targets.nopath"]
    assert lines["providers.count"].startswith("ok the management key")
    assert lines["providers.offline"].startswith(
        f"FAILED no answer from {dead_url} ([providers.offline] base_url)")
    assert lines["targets.offline"].startswith("ok reads ")   # its Vault path is fine
    assert "2 of 6 check(s) failed" in result.stderr

    wrong_key = w.cli_in_process("check-config", "--connect",
                                 env={"IT_COUNT_ADMIN_KEY": "cnt_" + "x" * 40})
    lines = _lines(wrong_key.stdout)
    assert wrong_key.returncode == 3
    assert lines["providers.count"].startswith(
        "FAILED the management key ([providers.count] management_key_env or "
        f"management_key_file) was refused at {w.emulator.url}")

    wrong_token = w.cli_in_process("check-config", "--connect",
                                   env={"IT_VAULT_TOKEN": "s.wrongtoken"})
    lines = _lines(wrong_token.stdout)
    assert wrong_token.returncode == 3
    assert lines["vault"].startswith("FAILED cannot log in to Vault at ")
    assert "check the token of [vault.auth] ($IT_VAULT_TOKEN)" in lines["vault"]
    assert not any(subject.startswith("targets.") for subject in lines)  # not read at all

    for run in (result, wrong_key, wrong_token):
        assert not [s for s in secrets if s in run.stdout + run.stderr]

    # All good: the troubled targets gone, every check passes.
    w.config_path.write_text(w.config_path.read_text().split("\n[targets.nopath]")[0])
    good = w.cli_in_process("check-config", "--connect")
    assert good.returncode == 0, good.stdout + good.stderr
    assert set(_lines(good.stdout)) == {"vault", "targets.app", "providers.count"}
    assert all(line.startswith("ok ") for line in _lines(good.stdout).values())


def test_a_refusal_keeps_its_audit_row_and_says_what_to_do(make_world: MakeWorld) -> None:
    w, dead_url = _troubled(make_world)
    both = w.cli_in_process("rotate", "nopath", "offline")
    assert both.returncode == 1, both.stdout + both.stderr
    out = both.stdout
    assert (f"next step: nothing was changed; seed {w.mount}/count/nopath with the target's "
            f"current key (bao kv put -mount={w.mount} count/nopath api_key=@") in out
    assert (f"next step: nothing was changed; the provider was tried at {dead_url} "
            "([providers.offline] base_url)") in out

    refused = w.cli_in_process("rotate", "app", env={"IT_VAULT_TOKEN": "s.wrongtoken"})
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert ("next step: nothing was changed; check the token of [vault.auth] "
            f"($IT_VAULT_TOKEN): it must be valid and its policy must read and write "
            f"{w.mount}/count/app") in refused.stdout

    status = w.cli_in_process("status")
    assert status.returncode == 0, status.stderr
    steps = status.stdout.split("next steps (the last rotation was refused and changed "
                                "nothing):\n", 1)[1]
    assert f"  nopath: nothing was changed; seed {w.mount}/count/nopath" in steps
    assert f"  offline: nothing was changed; the provider was tried at {dead_url}" in steps
    assert "  app: nothing was changed; check the token of [vault.auth]" in steps

    # Each refusal is still a failed rotation in SQL, with its ending in the audit.
    codes = {r.target: (r.status, r.failure.code if r.failure else None)
             for r in w.rotations()}
    assert codes == {"nopath": (Status.FAILED, FailureCode.NO_CURRENT_KEY),
                     "offline": (Status.FAILED, FailureCode.CURRENT_KEY_UNPROBED),
                     "app": (Status.FAILED, FailureCode.VAULT_REFUSED)}
    repo = w.repository()
    try:
        endings = [e.target for e in repo.events() if e.action == AuditAction.FAILED]
    finally:
        repo.engine.dispose()
    assert sorted(endings) == ["app", "nopath", "offline"]
    assert w.accounts["app"].secret not in status.stdout + both.stdout + refused.stdout
