"""A newcomer's usual mistakes, through the real command: no config file where the
default looks, a mistyped target. Each is exit 2 with a message saying what to do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

CONFIG = """\
[vault]
url = "http://127.0.0.1:8200"
[vault.auth]
method = "token"
token_env = "MISTAKES_VAULT_TOKEN"

[providers.count]
type = "count"
base_url = "http://127.0.0.1:9100"
management_key_env = "MISTAKES_COUNT_KEY"

[targets.billing-export]
provider = "count"
service_account = "sa_1"
vault_path = "count/billing"

[targets.ci-deployer]
provider = "count"
service_account = "sa_2"
vault_path = "count/ci"
"""


def _rotator(cwd: Path, *args: str, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "ROTATOR_CONFIG"}
    return subprocess.run([sys.executable, "-m", "rotator", *args], cwd=cwd,
                          env={**base, **(env or {})}, capture_output=True, text=True,
                          timeout=30, check=False)


@pytest.mark.parametrize("command", [["status"], ["rotate", "--all"], ["check-config"],
                                     ["audit"], ["db", "current"]])
def test_no_default_config_names_both_ways_to_give_one(tmp_path: Path,
                                                       command: list[str]) -> None:
    result = _rotator(tmp_path, *command)
    assert result.returncode == 2, result.stderr
    assert "--config" in result.stderr and "$ROTATOR_CONFIG" in result.stderr
    assert str(tmp_path / "rotator.toml") in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_rotator_config_names_the_file_when_no_option_does(tmp_path: Path) -> None:
    config = tmp_path / "elsewhere.toml"
    config.write_text(CONFIG)
    result = _rotator(tmp_path, "rotate", "nope", env={"ROTATOR_CONFIG": str(config)})
    assert result.returncode == 2, result.stderr
    assert f"unknown target 'nope' in {config}" in result.stderr, result.stderr


@pytest.mark.parametrize("command", [["rotate"], ["verify"], ["audit"], ["audit", "export"],
                                     ["run", "--once", "--rotate"]])
def test_a_mistyped_target_is_told_the_close_one(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "rotator.toml").write_text(CONFIG)
    result = _rotator(tmp_path, *command, "billing-exprot")
    assert result.returncode == 2, result.stderr
    assert "unknown target 'billing-exprot'" in result.stderr, result.stderr
    assert "(configured: billing-export, ci-deployer)" in result.stderr
    assert "did you mean 'billing-export'?" in result.stderr


def test_a_target_close_to_none_lists_them_without_a_guess(tmp_path: Path) -> None:
    (tmp_path / "rotator.toml").write_text(CONFIG)
    result = _rotator(tmp_path, "rotate", "zzz")
    assert result.returncode == 2, result.stderr
    assert "(configured: billing-export, ci-deployer)" in result.stderr
    assert "did you mean" not in result.stderr


NO_VAULT_URL = CONFIG.replace('url = "http://127.0.0.1:8200"\n', "")
SECRETS = {"MISTAKES_VAULT_TOKEN": "t-mistakes", "MISTAKES_COUNT_KEY": "k-mistakes"}


def test_check_config_takes_vault_addr_when_the_config_has_no_url(tmp_path: Path) -> None:
    (tmp_path / "rotator.toml").write_text(NO_VAULT_URL)
    result = _rotator(tmp_path, "check-config",
                      env={**SECRETS, "VAULT_ADDR": "https://vault.example.com:8200"})
    assert result.returncode == 0, result.stderr
    assert "rotator.toml: ok (2 target(s), 1 provider(s))" in result.stdout


def test_check_config_prefers_the_config_s_url_to_vault_addr(tmp_path: Path) -> None:
    (tmp_path / "rotator.toml").write_text(CONFIG)
    # Plain http to a remote host is refused: were VAULT_ADDR read, this would be exit 2.
    result = _rotator(tmp_path, "check-config",
                      env={**SECRETS, "VAULT_ADDR": "http://vault.example.com:8200"})
    assert result.returncode == 0, result.stderr


def test_check_config_without_a_vault_url_anywhere_names_both(tmp_path: Path) -> None:
    (tmp_path / "rotator.toml").write_text(NO_VAULT_URL)
    env = {k: v for k, v in os.environ.items() if k != "VAULT_ADDR"}
    result = subprocess.run([sys.executable, "-m", "rotator", "check-config"], cwd=tmp_path,
                            env={**env, **SECRETS}, capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 2, result.stderr
    assert "vault.url: required key is missing: write [vault] url, or set $VAULT_ADDR" \
        in result.stderr
