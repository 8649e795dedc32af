"""``type = "http"`` in the config: the alt layout's example loads, and each malformed
template, pointer or header is a problem naming its key and line."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from rotator.config.http_provider import HttpProviderConfig
from rotator.config.json_pointer import MISSING, parse_pointer, resolve
from rotator.config.model import load_config
from rotator.core.errors import ConfigError
from tests.fixtures.emulator import ALT_SHAPE

BASE = """\
[vault]
url = "https://vault.example:8200"
[vault.auth]
method = "token"
token_env = "TEST_VAULT_TOKEN"

[targets.app]
provider = "alt"
service_account = "sa_1"
vault_path = "rotator/alt/app"

[providers.alt]
type = "http"
base_url = "https://api.alt.example"
management_key_env = "TEST_ALT_KEY"
"""
VALID = BASE + ALT_SHAPE


def load(tmp_path: Path, text: str) -> HttpProviderConfig:
    path = tmp_path / "rotator.toml"
    path.write_text(text)
    provider = load_config(path).providers["alt"]
    assert isinstance(provider, HttpProviderConfig)
    return provider


def test_the_alt_layouts_provider_loads(tmp_path: Path) -> None:
    alt = load(tmp_path, VALID)
    assert alt.create_key.method == "POST" and alt.create_key.status == 200
    assert alt.create_key.body == {"credential": {"label": "{name}"}}
    assert alt.delete_key.status == 204 and alt.delete_key.gone_status == 404
    assert alt.auth_format == "Key {key}" and alt.rate_limit.retry_after == "Retry-After"


def test_the_example_config_has_a_generic_provider() -> None:
    example = Path(__file__).resolve().parents[2] / "config.example.toml"
    providers = load_config(example).providers
    assert any(isinstance(p, HttpProviderConfig) for p in providers.values())


BAD = [
    ("path placeholder", 'path = "/api/2/me"', 'path = "/api/2/me/{key_id}"',
     "providers.alt.probe.path", "may use no placeholders"),
    ("unbalanced brace", 'path = "/api/2/accounts/{service_account}/credentials"\nitems',
     'path = "/api/2/accounts/{service_account/credentials"\nitems',
     "providers.alt.list_keys.path", "unbalanced"),
    ("body placeholder", 'label = "{name}"', 'label = "{key_id}"',
     "providers.alt.create_key.body", "{name}, {service_account}"),
    ("relative pointer", 'secret = "/data/credential/token"', 'secret = "data.token"',
     "providers.alt.create_key.secret", "RFC 6901"),
    ("bad escape", 'error_code = "/errors/0/code"', 'error_code = "/errors/~2"',
     "providers.alt.error_code", "'~0'"),
    ("format without key", 'auth_format = "Key {key}"', 'auth_format = "Key"',
     "providers.alt.auth_format", "{key}"),
    ("header name", 'auth_header = "X-Auth-Token"', 'auth_header = "X Auth"',
     "providers.alt.auth_header", "header name"),
    ("status not 2xx", "status = 204", "status = 404",
     "providers.alt.delete_key.status", "less than or equal to 299"),
    ("missing pointer", 'key_id = "/data/credential"\n', "\n",
     "providers.alt.probe.key_id", "required key is missing"),
    ("unknown type", 'type = "http"', 'type = "graphql"', "providers.alt.type",
     "'count', 'http'"),
]


@pytest.mark.parametrize(("old", "new", "key", "message"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])
def test_a_bad_definition_names_its_key_and_line(tmp_path: Path, old: str, new: str,
                                                 key: str, message: str) -> None:
    assert old in VALID
    text = VALID.replace(old, new)
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    problems = info.value.problems
    assert key in problems, problems
    assert message in problems[key]
    if new.strip():
        first = new.splitlines()[0]
        line = next(n for n, text_line in enumerate(text.splitlines(), 1) if first in text_line)
        assert problems[key].endswith(f"(line {line})"), problems[key]


def test_json_pointers_follow_rfc_6901() -> None:
    doc = {"a/b": {"m~n": [10, {"": "empty"}]}, "0": "zero"}
    assert parse_pointer("/a~1b/m~0n/1/") == ("a/b", "m~n", "1", "")
    assert resolve(doc, parse_pointer("/a~1b/m~0n/1/")) == "empty"
    assert resolve(doc, parse_pointer("/a~1b/m~0n/0")) == 10
    assert resolve(doc, parse_pointer("/0")) == "zero"
    assert resolve(doc, parse_pointer("")) is doc
    for missing in ("/a~1b/m~0n/01", "/a~1b/m~0n/-", "/a~1b/m~0n/2", "/nope", "/0/x"):
        assert resolve(doc, parse_pointer(missing)) is MISSING, missing


def test_the_readmes_worked_example_is_the_tests_definition(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```toml\n(.*?)```", readme, re.S)
                if "[providers.alt]" in b]
    shown = HttpProviderConfig.model_validate(tomllib.loads(block)["providers"]["alt"])
    tested = load(tmp_path, VALID)
    ignore = {"base_url", "management_key_env"}
    assert shown.model_dump(exclude=ignore) == tested.model_dump(exclude=ignore)
