"""Config of usage-aware grace and self-rotation: resolved per target, and every
inconsistency refused with the key and line it is at (exit 2 from check-config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rotator.app.runtime import target_spec
from rotator.cli.main import main
from rotator.config.model import load_config
from rotator.core.errors import ConfigError
from rotator.core.grace import GracePolicy
from rotator.core.ports import SecretRef
from tests.unit.test_config import VALID, write

SECOND = """
[targets.admin]
provider = "count"
service_account = "sa_admin"
vault_path = "count/admin"
"""


def _problems(tmp_path: Path, text: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, text))
    return dict(raised.value.problems)


def test_usage_grace_falls_back_to_the_defaults_and_a_target_may_set_its_own(
        tmp_path: Path) -> None:
    text = VALID.replace("[targets.app]", '[defaults]\nquiet_period = "5m"\n'
                         'max_grace = "1d"\n\n[targets.app]') + SECOND + (
        'quiet_period = "1m"\nmax_grace = "2h"\n')
    config = load_config(write(tmp_path, text))
    assert config.usage_grace_for("app") == (300, 86400)
    assert config.usage_grace_for("admin") == (60, 7200)
    spec = target_spec(config, "admin", {"count": None})
    assert spec.usage_grace == GracePolicy(60, 7200)


def test_without_usage_grace_the_spec_has_none(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID))
    assert config.usage_grace_for("app") is None
    assert target_spec(config, "app", {"count": None}).usage_grace is None


@pytest.mark.parametrize(("lines", "key", "words"), [
    ('quiet_period = "5m"\n', "targets.app.quiet_period", "needs max_grace too"),
    ('quiet_period = "2h"\nmax_grace = "1h"\n', "targets.app.quiet_period",
     "shorter than max_grace"),
    ('quiet_period = "1m"\nmax_grace = "5m"\n', "targets.app.max_grace",
     "not be shorter than grace"),
    ('quiet_period = "0s"\nmax_grace = "1h"\n', "targets.app.quiet_period", "longer than 0s"),
])
def test_inconsistent_usage_grace_is_refused_at_its_key_and_line(
        tmp_path: Path, lines: str, key: str, words: str) -> None:
    problems = _problems(tmp_path, VALID + lines)
    assert words in problems[key]
    assert "(line " in problems[key]


def test_defaults_with_one_of_the_two_are_refused_at_defaults(tmp_path: Path) -> None:
    text = VALID.replace("[targets.app]", '[defaults]\nmax_grace = "1d"\n\n[targets.app]')
    assert "needs quiet_period too" in _problems(tmp_path, text)["defaults.max_grace"]


SELF_ROTATING = VALID.replace('management_key_env = "TEST_COUNT_KEY"',
                              'management_key_target = "admin"') + SECOND


def test_a_management_key_target_reads_the_key_from_that_targets_vault_path(
        tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SELF_ROTATING))
    spec = target_spec(config, "app", {"count": None})
    assert spec.management_key is None
    assert spec.management_key_ref == SecretRef("secret", "count/admin", "api_key")


@pytest.mark.parametrize(("text", "key", "words"), [
    (SELF_ROTATING.replace('management_key_target = "admin"',
                           'management_key_target = "nobody"'),
     "providers.count.management_key_target", "names no configured target"),
    (SELF_ROTATING.replace('management_key_target = "admin"',
                           'management_key_target = "admin"\n'
                           'management_key_env = "TEST_COUNT_KEY"'),
     "providers.count", "keep one of the two"),
    (SELF_ROTATING.replace('type = "count"', 'type = "count"\nauth_mode = "self"'),
     "providers.count", "auth_mode 'admin' only"),
    (SELF_ROTATING + '\n[providers.other]\ntype = "count"\n'
     'base_url = "https://other.example"\nmanagement_key_target = "app"\n',
     "providers.other.management_key_target", "whose provider is count, not other"),
])
def test_a_bad_management_key_target_is_refused(tmp_path: Path, text: str, key: str,
                                                words: str) -> None:
    problems = _problems(tmp_path, text)
    assert words in problems[key], problems


def test_check_config_exits_2_on_a_bad_quiet_period(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, VALID + 'quiet_period = "2h"\nmax_grace = "1h"\n')
    assert main(["--config", str(path), "check-config"]) == 2
    assert "quiet_period" in capsys.readouterr().err
