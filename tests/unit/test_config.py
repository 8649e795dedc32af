"""Config validation: every malformed file gives exit code 2 and names the key and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from rotator.adapters.vault.auth import TokenAuth
from rotator.app.runtime import vault_auth
from rotator.cli.main import main
from rotator.config.model import load_config
from rotator.config.retry import RetryPolicy
from rotator.core.durations import parse_duration
from rotator.core.errors import ConfigError, UsageError

VALID = """\
[database]
url = "sqlite:///rotator.db"

[vault]
url = "https://vault.example:8200"
[vault.auth]
method = "token"
token_env = "TEST_VAULT_TOKEN"

[providers.count]
type = "count"
base_url = "https://api.count.example"
management_key_env = "TEST_COUNT_KEY"

[targets.app]
provider = "count"
service_account = "sa_1"
vault_path = "count/app"
grace = "10m"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rotator.toml"
    path.write_text(text)
    return path


def test_valid_config_loads_with_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID))
    assert config.grace_for("app") == 600
    assert config.targets["app"].vault_mount == "secret"
    assert config.probe_for("app").timeout == 60
    assert config.providers["count"].paths.whoami == "/v1/whoami"
    assert config.providers["count"].retry.max_retry_after == 120


def test_retry_tables_hold_the_adapters_policy(tmp_path: Path) -> None:
    text = VALID + '[providers.count.retry]\nmax_attempts = 3\nmax_retry_after = "30s"\n'
    retry = load_config(write(tmp_path, text)).providers["count"].retry
    assert retry == RetryPolicy(max_attempts=3, max_retry_after=30.0)
    assert retry.delay(1, retry_after=600.0) == 30.0


def test_schedules_fall_back_key_by_key_and_every_or_cron_is_taken_whole(
        tmp_path: Path) -> None:
    text = VALID.replace("[targets.app]", """[defaults.schedule]
every = "90d"
jitter = "1h"
window = "02:00-05:00"

[targets.app]""") + """[targets.app.schedule]
cron = "0 3 * * MON"
timezone = "Europe/Berlin"

[targets.other]
provider = "count"
service_account = "sa_2"
vault_path = "count/other"
"""
    config = load_config(write(tmp_path, text))
    app, other = config.schedule_for("app"), config.schedule_for("other")
    assert (app.cron, app.every, app.timezone) == ("0 3 * * MON", None, "Europe/Berlin")
    assert app.jitter == 3600 and app.window == other.window is not None
    assert (other.every, other.cron, other.timezone) == (90 * 86400, None, "UTC")


def test_without_any_schedule_a_target_rotates_every_30_days(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID))
    schedule = config.schedule_for("app")
    assert schedule.every == 30 * 86400 and schedule.enabled
    assert config.daemon.port == 9108 and config.logging.format == "auto"


def test_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "config.example.toml"
    assert "billing-export" in load_config(example).targets


BAD = [
    ("missing vault", VALID.replace('[vault]\nurl = "https://vault.example:8200"\n', ""),
     "vault.url", "required key is missing"),
    ("no targets", VALID.split("[targets.app]", maxsplit=1)[0], "targets",
     "required key is missing"),
    ("wrong type", VALID.replace('service_account = "sa_1"', "service_account = 12"),
     "targets.app.service_account", "valid string"),
    ("bool grace", VALID.replace('grace = "10m"', "grace = true"),
     "targets.app.grace", "duration"),
    ("unknown provider", VALID.replace('provider = "count"', 'provider = "cuont"'),
     "targets.app.provider", "names no configured provider (configured: count)"),
    ("unknown provider type", VALID.replace('type = "count"', 'type = "github"'),
     "providers.count.type", "'count'"),
    ("inline vault token", VALID.replace('token_env = "TEST_VAULT_TOKEN"',
                                         'token = "hvs.abcdefghijklmnopqrstuvwx"'),
     "vault.auth", "'token' must not be written in the config file"),
    ("inline management key", VALID.replace('management_key_env = "TEST_COUNT_KEY"',
                                            'management_key = "cnt_abc"'),
     "providers.count", "'management_key' must not be written"),
    ("negative grace", VALID.replace('grace = "10m"', 'grace = "-5m"'),
     "targets.app.grace", "must not be negative"),
    ("bad duration", VALID.replace('grace = "10m"', 'grace = "5 parsecs"'),
     "targets.app.grace", "invalid duration"),
    ("bad url", VALID.replace('url = "https://vault.example:8200"', 'url = "vault:8200"'),
     "vault.url", "invalid URL"),
    ("plain http remote", VALID.replace("https://api.count.example", "http://api.count.example"),
     "providers.count", "plain http://"),
    ("typo key", VALID.replace('grace = "10m"', 'gracee = "10m"'),
     "targets.app.gracee", "unknown key"),
    ("admin without key", VALID.replace('management_key_env = "TEST_COUNT_KEY"\n', ""),
     "providers.count.management_key_env/management_key_file",
     "name exactly one source for the secret: management_key_env"),
    ("approle without secret id", VALID.replace(
        'method = "token"\ntoken_env = "TEST_VAULT_TOKEN"', 'method = "approle"\nrole_id = "r"'),
     "vault.auth.secret_id_env/secret_id_file", "secret_id_env (an environment variable)"),
    ("bad database url", VALID.replace('url = "sqlite:///rotator.db"', 'url = "mysql://x"'),
     "database.url", "postgresql"),
    ("bad cron", VALID + '[targets.app.schedule]\ncron = "0 3 * * FUNDAY"\n',
     "targets.app.schedule", "invalid day of week"),
    ("every and cron", VALID + '[defaults.schedule]\nevery = "30d"\ncron = "0 3 * * *"\n',
     "defaults.schedule", "either 'every' or 'cron'"),
    ("unknown time zone", VALID + '[targets.app.schedule]\ntimezone = "Mars/Olympus"\n',
     "targets.app.schedule.timezone", "unknown time zone (the value)"),
    ("bad window", VALID + '[targets.app.schedule]\nwindow = "25:00-03:00"\n',
     "targets.app.schedule.window", "invalid window (the value): expected 'HH:MM-HH:MM'"),
    ("zero interval", VALID + '[targets.app.schedule]\nevery = "0s"\n',
     "targets.app.schedule.every", "longer than 0s"),
    ("bad listen", VALID + '[daemon]\nlisten = "9108"\n', "daemon.listen", "HOST:PORT"),
    ("too few workers", VALID + '[daemon]\nworkers = 0\n', "daemon.workers",
     "greater than or equal to 1"),
    ("bad log level", VALID + '[logging]\nlevel = "loud"\n', "logging.level", "'debug'"),
    ("odd target name", VALID.replace("[targets.app]", '[targets."@daemon"]'),
     "targets.@daemon", "a target name is"),
    # Longer than SQL keeps (rotations' columns): refused here, not at the first write.
    ("long service account", VALID.replace('"sa_1"', '"' + "s" * 201 + '"'),
     "targets.app.service_account", "at most 200 characters"),
    ("long mount", VALID.replace('vault_path = "count/app"',
                                 'vault_path = "count/app"\nvault_mount = "' + "m" * 201 + '"'),
     "targets.app.vault_mount", "at most 200 characters"),
    ("long field", VALID.replace('vault_path = "count/app"',
                                 'vault_path = "count/app"\nvault_field = "' + "f" * 201 + '"'),
     "targets.app.vault_field", "at most 200 characters"),
    ("long provider name", VALID.replace("[providers.count]", "[providers." + "p" * 201 + "]")
     .replace('provider = "count"', 'provider = "' + "p" * 201 + '"'),
     "providers." + "p" * 40 + "…", "a provider name is at most 200 characters"),
    ("empty field", VALID.replace('vault_path = "count/app"',
                                  'vault_path = "count/app"\nvault_field = ""'),
     "targets.app.vault_field", "at least 1 character"),
    ("relative path", VALID + '[providers.count.paths]\nwhoami = "v1/whoami"\n',
     "providers.count.paths.whoami", "must start with '/'"),
    ("unknown placeholder", VALID + '[providers.count.paths]\napi_key = "/v1/keys/{key}"\n',
     "providers.count.paths.api_key", "only the placeholders {key_id}, {service_account}"),
    ("negative max_retry_after", VALID + '[providers.count.retry]\nmax_retry_after = "-1s"\n',
     "providers.count.retry.max_retry_after", "must not be negative"),
    ("no attempts", VALID + '[vault.retry]\nmax_attempts = 0\n', "vault.retry.max_attempts",
     "greater than or equal to 1"),
    ("proxy with credentials", VALID.replace(
        'url = "https://vault.example:8200"',
        'url = "https://vault.example:8200"\nproxy = "http://u:hunter2@proxy:3128"'),
     "vault.proxy", "must not hold credentials"),
    ("proxy not a url", VALID.replace('management_key_env = "TEST_COUNT_KEY"',
                                      'management_key_env = "TEST_COUNT_KEY"\n'
                                      'proxy = "socks5://proxy:1080"'),
     "providers.count.proxy", "expected http://host:port"),
]


def test_a_proxy_is_read_per_service_and_a_bad_one_is_not_echoed(tmp_path: Path) -> None:
    text = VALID.replace('url = "https://vault.example:8200"',
                         'url = "https://vault.example:8200"\nproxy = "http://proxy:3128/"')
    config = load_config(write(tmp_path, text))
    assert (config.vault.proxy, config.providers["count"].proxy) == ("http://proxy:3128", None)
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text.replace("http://proxy:3128/",
                                                 "http://u:hunter2@proxy:3128")))
    assert "hunter2" not in str(info.value) + repr(info.value.problems)


@pytest.mark.parametrize(("text", "key", "message"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])
def test_bad_config_names_the_key(tmp_path: Path, text: str, key: str, message: str,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert key in info.value.problems, info.value.problems
    assert message in info.value.problems[key]
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and key in err and message in err
    assert "Traceback" not in err


def test_problem_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace('grace = "10m"', 'grace = "-5m"'))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    line = VALID.splitlines().index('grace = "10m"') + 1
    assert info.value.problems["targets.app.grace"].endswith(f"(line {line})")


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    text = VALID.replace('grace = "10m"', 'grace = "-5m"').replace(
        'url = "https://vault.example:8200"', 'url = "nope"')
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert {"targets.app.grace", "vault.url"} <= info.value.problems.keys()


def test_invalid_toml_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, VALID + "\n[targets.broken\n")
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not valid TOML" in err and "line" in err


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "nope.toml")]) == 2
    assert "cannot read config file" in capsys.readouterr().err


def test_check_config_reports_unreadable_secrets(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("TEST_VAULT_TOKEN", raising=False)
    monkeypatch.delenv("TEST_COUNT_KEY", raising=False)
    assert main(["check-config", str(write(tmp_path, VALID))]) == 2
    err = capsys.readouterr().err
    assert "TEST_VAULT_TOKEN" in err and "TEST_COUNT_KEY" in err
    monkeypatch.setenv("TEST_VAULT_TOKEN", "t0ken-value")
    monkeypatch.setenv("TEST_COUNT_KEY", "cnt_value")
    assert main(["check-config", str(write(tmp_path, VALID))]) == 0
    assert "t0ken-value" not in capsys.readouterr().out


def test_unknown_target_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, VALID)
    assert main(["--config", str(path), "rotate", "nope"]) == 2
    assert "unknown target 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["rotate", "nope"], ["verify", "app", "nope"],
                                  ["audit", "nope"], ["run", "--once", "--rotate", "nope"]])
def test_every_command_refuses_an_unknown_target_alike(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    path = write(tmp_path, VALID)
    assert main(["--config", str(path), *argv]) == 2
    assert f"unknown target 'nope' in {path} (configured: app)" in capsys.readouterr().err


def test_config_names_the_unknown_target(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    config = load_config(path)
    assert config.target("app") is config.targets["app"]
    config.require_targets(["app"])
    with pytest.raises(UsageError) as info:
        config.require_targets(["app", "nope", "other"])
    assert info.value.message == f"unknown target 'nope' in {path} (configured: app)"


def test_rotate_needs_targets_or_all(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    assert main(["--config", str(path), "rotate"]) == 2
    assert main(["--config", str(path), "rotate", "--all", "app"]) == 2


def test_bad_cli_duration_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as info:
        main(["rotate", "--grace", "soon", "app"])
    assert info.value.code == 2


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("1h30m", 5400), ("500ms", 0.5),
                                               ("30d", 2592000), (12, 12), ("0s", 0)])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_config_option_works_before_and_after_the_command(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before, after = tmp_path / "before.toml", tmp_path / "after.toml"
    assert main(["run", "--config", str(after)]) == 2          # as the container runs it
    assert f"cannot read config file {after}" in capsys.readouterr().err
    assert main(["--config", str(before), "status", "--config", str(after)]) == 2
    assert str(after) in capsys.readouterr().err               # the later one wins
    assert main(["--config", str(before), "db", "current"]) == 2
    assert str(before) in capsys.readouterr().err              # and the earlier one stays


# --- one source per secret, no value in any message (review findings 2, 8, 9) -------------

TOKEN_SOURCE = 'token_env = "TEST_VAULT_TOKEN"'


@pytest.mark.parametrize(("old", "new", "key"), [
    (TOKEN_SOURCE, TOKEN_SOURCE + '\ntoken_file = "/run/vault-token"',
     "vault.auth.token_env/token_file"),
    ('management_key_env = "TEST_COUNT_KEY"',
     'management_key_env = "TEST_COUNT_KEY"\nmanagement_key_file = "/run/count-key"',
     "providers.count.management_key_env/management_key_file"),
    ('method = "token"\n' + TOKEN_SOURCE,
     'method = "approle"\nrole_id = "r"\nsecret_id_env = "SID"\nsecret_id_file = "/run/sid"',
     "vault.auth.secret_id_env/secret_id_file"),
], ids=["vault token", "management key", "approle secret id"])
def test_a_secret_with_both_sources_named_is_a_config_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str,
        key: str) -> None:
    path = write(tmp_path, VALID.replace(old, new))
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{key}: names both" in err and str(path) in err
    assert "(line " in err


def test_a_vault_token_with_no_source_named_is_a_config_error_not_vault_token(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Finding 2: token_env defaulted to VAULT_TOKEN, so a config naming no source ran on
    # whatever token the operator's shell held.
    monkeypatch.setenv("VAULT_TOKEN", "hvs.operators-broad-token-0123456789")
    path = write(tmp_path, VALID.replace(TOKEN_SOURCE + "\n", ""))
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "vault.auth.token_env/token_file: name exactly one source" in err


def test_token_file_is_used_and_vault_token_in_the_environment_ignored(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    token_file = tmp_path / "vault-token"
    token_file.write_text("least-privilege-token-42\n")
    monkeypatch.setenv("VAULT_TOKEN", "operators-broad-token-42")
    monkeypatch.setenv("TEST_COUNT_KEY", "cnt_value")
    path = write(tmp_path, VALID.replace(TOKEN_SOURCE, f'token_file = "{token_file}"'))
    auth = vault_auth(load_config(path))
    assert isinstance(auth, TokenAuth) and auth.token.reveal() == "least-privilege-token-42"
    monkeypatch.delenv("VAULT_TOKEN")
    assert main(["check-config", str(path)]) == 0, capsys.readouterr().err


@pytest.mark.parametrize(("key", "line"), [
    ("targets.app.vault_path", 'vault_path = "rotator/../other/gamma"'),
    ("targets.app.vault_path", 'vault_path = "count/./app"'),
    ("targets.app.vault_path", 'vault_path = "count//app"'),
    ("targets.app.vault_path", 'vault_path = "/count/app"'),
    ("targets.app.vault_path", 'vault_path = "count/app/"'),
    ("targets.app.vault_path", 'vault_path = ".."'),
    ("targets.app.vault_mount", 'vault_mount = "secret/../sys"'),
    ("targets.app.vault_mount", 'vault_mount = ""'),
])
def test_vault_mount_and_path_segments_are_checked(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, line: str) -> None:
    kept = "" if key.endswith("vault_path") else 'vault_path = "count/app"\n'
    path = write(tmp_path, VALID.replace('vault_path = "count/app"', kept + line))
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    value = line.split("=", 1)[1].strip().strip('"')
    assert f"{key}: must not" in err and str(path) in err
    assert len(value) < 3 or value not in err   # '..' is in the message's own words


@pytest.mark.parametrize("old", ['base_url = "https://api.count.example"',
                                 'url = "https://vault.example:8200"'])
def test_a_url_with_user_info_is_refused_without_echoing_the_password(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str) -> None:
    new = old.replace("https://", "https://svcuser:Pa55w0rd-in-url@")
    path = write(tmp_path, VALID.replace(old, new))
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "user info ('user:password@') is not allowed" in err
    assert "Pa55w0rd-in-url" not in err and "svcuser" not in err


@pytest.mark.parametrize("pasted", [
    "cnt_ABCDEFGHIJKLMNOPQRSTUVWXYZ012345",      # a Count key
    "hvs.CAESIabcdefghijklmnopqrstuvwxyz",       # a Vault token
    "Zx8kQ2mN7pL4vR9tY3wE6uI1oA5sD0fG",          # key material of no known shape
    "not a variable name!",
])
def test_a_key_pasted_into_an_env_key_is_refused_without_echoing_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], pasted: str) -> None:
    path = write(tmp_path, VALID.replace('"TEST_COUNT_KEY"', f'"{pasted}"'))
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "providers.count.management_key_env:" in err and "(line " in err
    assert pasted not in err and pasted[:8] not in err


@pytest.mark.parametrize(("old", "new"), [
    ('grace = "10m"', 'grace = "cnt_ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"'),
    ('service_account = "sa_1"', 'service_account = ["cnt_ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"]'),
    ('provider = "count"', 'provider = "cnt_ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"'),
    ('[targets.app]', '[daemon]\nlisten = "cnt_ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"\n[targets.app]'),
    ('[targets.app]', '[providers.count.paths]\n'
                      'whoami = "cnt_ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"\n[targets.app]'),
])
def test_no_config_error_quotes_the_value_it_refuses(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str) -> None:
    path = write(tmp_path, VALID.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "ABCDEFGHIJ" not in str(info.value), info.value.problems
    assert main(["check-config", str(path)]) == 2
    assert "ABCDEFGHIJ" not in capsys.readouterr().err


def test_an_auth_table_without_its_method_names_the_missing_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, VALID.replace('method = "token"\n', "")))
    assert info.value.problems == {"vault.auth.method": "required key is missing"}


NO_VAULT_URL = VALID.replace('url = "https://vault.example:8200"\n', "")


def test_vault_addr_stands_in_for_a_missing_vault_url(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_ADDR", "https://bao.example:8200/")
    assert load_config(write(tmp_path, NO_VAULT_URL)).vault.url == "https://bao.example:8200"


def test_the_config_s_vault_url_wins_over_vault_addr(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_ADDR", "https://bao.example:8200")
    assert load_config(write(tmp_path, VALID)).vault.url == "https://vault.example:8200"


def test_no_vault_url_and_no_vault_addr_names_both(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VAULT_ADDR", raising=False)
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, NO_VAULT_URL))
    assert caught.value.problems == {
        "vault.url": "required key is missing: write [vault] url, or set $VAULT_ADDR"}


def test_a_bad_vault_addr_is_named_as_the_url_s_source(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_ADDR", "vault.example:8200")   # no scheme
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, NO_VAULT_URL))
    problem = caught.value.problems["vault.url"]
    assert problem.startswith("invalid URL") and "$VAULT_ADDR" in problem
    assert "vault.example" not in problem
