"""Bad-input fuzzing of the config loader: whatever the file holds, a classified error.

Random bytes, random text, random TOML documents and mutations of a valid config go
through ``load_config`` and ``rotator check-config``. The only exception allowed out of
``load_config`` is ``ConfigError`` (naming the file, each problem under a dotted key);
``check-config`` answers 0 or 2 and never prints a traceback.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rotator.cli.main import main
from rotator.config.model import Config, load_config
from rotator.core.durations import parse_duration
from rotator.core.errors import ConfigError

FUZZ = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ENV = {"FUZZ_VAULT_TOKEN": "hvs.fuzz-token-value", "FUZZ_COUNT_KEY": "cnt_fuzz_key_value"}

# A valid config that sets most keys, so that mutations reach most of the schema.
BASE = """\
[database]
url = "sqlite:///rotator.db"

[daemon]
listen = "127.0.0.1:9108"
poll_interval = "60s"
shutdown_timeout = "25s"
workers = 4

[logging]
format = "json"
level = "info"

[vault]
url = "https://vault.example:8200"
namespace = "platform"
timeout = "10s"

[vault.auth]
method = "token"
token_env = "FUZZ_VAULT_TOKEN"

[vault.retry]
max_attempts = 5
base_delay = "200ms"
max_delay = "10s"
max_elapsed = "60s"

[providers.count]
type = "count"
base_url = "https://api.count.example"
auth_mode = "admin"
management_key_env = "FUZZ_COUNT_KEY"
timeout = "10s"

[providers.count.paths]
whoami = "/v1/whoami"

[providers.count.retry]
max_attempts = 3

[defaults]
grace = "1h"
lease_ttl = "5m"

[defaults.probe]
timeout = "60s"
interval = "1s"

[defaults.schedule]
every = "30d"
timezone = "UTC"
jitter = "0s"
retry_failed_after = "1h"
enabled = true

[targets.app]
provider = "count"
service_account = "sa_1"
vault_mount = "secret"
vault_path = "count/app"
vault_field = "api_key"
grace = "10m"

[targets.app.probe]
timeout = "2m"
interval = "2s"

[targets.app.schedule]
window = "02:00-05:00"
max_key_age = "35d"
"""
BASE_DOC = tomllib.loads(BASE)
MAPS = {("providers",), ("targets",)}   # tables whose keys are names, not fields


# --- a tiny TOML writer (tomli-w is not a dependency) ---------------------------------------

class Raw(str):
    """Already TOML: written as is (deep nesting, built without recursion)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Raw({self[:12]!r}... {len(self)} chars)"


def _string(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _value(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_string(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def to_toml(doc: dict[str, Any]) -> str:
    lines: list[str] = []
    pending: list[tuple[list[str], dict[str, Any]]] = [([], doc)]
    while pending:   # tables in document order, without recursion (deep chains)
        path, table = pending.pop(0)
        leaves = {k: v for k, v in table.items() if not isinstance(v, dict)}
        subs = [([*path, k], v) for k, v in table.items() if isinstance(v, dict)]
        if path and (leaves or not subs):
            lines.append("[" + ".".join(_string(p) for p in path) + "]")
        lines += [f"{_string(k)} = {_value(v)}" for k, v in leaves.items()]
        pending[:0] = subs
    return "\n".join(lines) + "\n"


# --- strategies ---------------------------------------------------------------------------

KNOWN_KEYS = sorted({
    "database", "daemon", "logging", "vault", "providers", "defaults", "targets", "url",
    "auth", "method", "token_env", "token", "type", "base_url", "auth_mode",
    "management_key_env", "management_key_file", "paths", "retry", "max_attempts", "grace",
    "probe", "schedule", "every", "cron", "window", "provider", "service_account",
    "vault_path", "count", "app", "listen", "workers", "source", "secret",
})
keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=10))
scalars = st.one_of(
    st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(), st.text(max_size=20),
    st.sampled_from(["count", "token", "approle", "kubernetes", "self", "admin", "30s",
                     "-1s", "1e9w", "https://x.example", "http://10.0.0.1", "sqlite:///x",
                     "0 3 * * *", "02:00-05:00", "Europe/Berlin", "0.0.0.0:1", ""]))
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner,
                                                                         max_size=3),
    max_leaves=12)
documents = st.dictionaries(keys, values, max_size=6)
def _chain(depth: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        doc = {"d": doc}
    return doc


deep = st.one_of(
    st.integers(1, 6000).map(lambda n: Raw("[" * n + "]" * n)),
    st.integers(1, 3000).map(lambda n: Raw("{a = " * n + "1" + "}" * n)),
    st.integers(1, 400).map(_chain))


# --- helpers ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cfg_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "rotator.toml"


@pytest.fixture(scope="module", autouse=True)
def _secrets_env() -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in ENV}
    os.environ.update(ENV)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def load_or_error(path: Path) -> Config | ConfigError:
    """``load_config``; a ConfigError is returned after checking its shape."""
    try:
        return load_config(path)
    except ConfigError as exc:
        assert str(path) in exc.message, exc.message
        assert exc.context.get("file") == str(path)
        lines = path.read_bytes().count(b"\n") + 1
        for key, why in exc.problems.items():
            assert isinstance(key, str) and key and isinstance(why, str) and why
            if why.endswith(")") and "(line " in why:
                line = int(why.rsplit("(line ", 1)[1][:-1])
                assert 1 <= line <= lines
        str(exc)   # renders
        return exc


def dotted(path: tuple[str, ...]) -> str:
    return ".".join(path) or "(top level)"


def related(a: str, b: str) -> bool:
    """``a`` and ``b`` are the same key, or one is a table holding the other.

    A problem may name a choice of keys, ``vault.auth.token_env/token_file``: either one.
    """
    return any(x == y or x == "(top level)" or y == "(top level)"
               or x.startswith(y + ".") or y.startswith(x + ".")
               for x in _choices(a) for y in _choices(b))


def _choices(key: str) -> list[str]:
    table, dot, leaf = key.rpartition(".")
    return [f"{table}{dot}{name}" for name in leaf.split("/")]


def paths_of(doc: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for key, value in doc.items():
        found.append((*prefix, key))
        if isinstance(value, dict):
            found += paths_of(value, (*prefix, key))
    return found


def tables_of(doc: dict[str, Any]) -> list[tuple[str, ...]]:
    return [(), *(p for p in paths_of(doc) if isinstance(_get(doc, p), dict))]


def _get(doc: dict[str, Any], path: tuple[str, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _copy(doc: Any) -> Any:
    return {k: _copy(v) for k, v in doc.items()} if isinstance(doc, dict) else doc


def run_check_config(path: Path) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["check-config", str(path)])
    return code, err.getvalue()


# --- the emitter is faithful ---------------------------------------------------------------

@FUZZ
@given(doc=documents)
def test_the_toml_writer_round_trips(doc: dict[str, Any]) -> None:
    text = to_toml(doc)
    if "nan" not in text:   # nan != nan
        assert tomllib.loads(text) == doc


def test_base_config_is_valid(cfg_file: Path) -> None:
    cfg_file.write_text(BASE, encoding="utf-8")
    assert isinstance(load_config(cfg_file), Config)
    cfg_file.write_text(to_toml(BASE_DOC), encoding="utf-8")
    assert isinstance(load_config(cfg_file), Config)
    assert run_check_config(cfg_file) == (0, "")


# --- random input -------------------------------------------------------------------------

@FUZZ
@given(data=st.binary(max_size=300))
@example(data=b"\xff\xfe[vault]")                        # not UTF-8
@example(data=b"\xef\xbb\xbf[vault]\nurl = 1\n")          # a BOM
@example(data=b'x = "\xc3"\n')                            # truncated UTF-8 sequence
def test_random_bytes_give_a_config_error(cfg_file: Path, data: bytes) -> None:
    cfg_file.write_bytes(data)
    assert isinstance(load_or_error(cfg_file), ConfigError)


@FUZZ
@given(text=st.text(alphabet=st.sampled_from('[]{}="\'.,#\n \t=abc01_-:')
                    | st.characters(codec="utf-8"), max_size=200))
def test_random_text_gives_a_config_error(cfg_file: Path, text: str) -> None:
    cfg_file.write_text(text, encoding="utf-8")
    assert isinstance(load_or_error(cfg_file), ConfigError)


@FUZZ
@given(doc=documents)
def test_random_toml_documents_give_a_config_error(cfg_file: Path,
                                                   doc: dict[str, Any]) -> None:
    cfg_file.write_text(to_toml(doc), encoding="utf-8")
    outcome = load_or_error(cfg_file)
    if isinstance(outcome, ConfigError):
        assert outcome.problems, outcome   # valid TOML: every problem has its key


@settings(FUZZ, max_examples=15)
@given(value=deep)
@example(value=Raw("[" * 5000 + "]" * 5000))
@example(value=Raw("{a = " * 3000 + "1" + "}" * 3000))
def test_deep_nesting_gives_a_config_error(cfg_file: Path, value: Any) -> None:
    doc = _copy(BASE_DOC)
    doc["targets"]["app"]["nested"] = value
    cfg_file.write_text(to_toml(doc), encoding="utf-8")
    outcome = load_or_error(cfg_file)
    assert isinstance(outcome, ConfigError)
    assert list(outcome.problems) in ([], ["targets.app.nested"]), outcome


# --- what the fuzzing found, pinned ---------------------------------------------------------

@pytest.mark.parametrize(("data", "message"), [
    (b'x = "\xc3"\n', "not UTF-8"),
    (b"x = " + b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    (b"x = " + b"{a = " * 3000 + b"1" + b"}" * 3000, "nested too deeply"),
])
def test_undecodable_or_too_deep_files_are_config_errors(cfg_file: Path, data: bytes,
                                                         message: str) -> None:
    cfg_file.write_bytes(data)
    with pytest.raises(ConfigError, match=message):
        load_config(cfg_file)


@pytest.mark.parametrize(("key", "toml", "message"), [
    ("daemon.listen", "[daemon]\nlisten = false", "HOST:PORT"),
    ("daemon.listen", "[daemon]\nlisten = [1]", "HOST:PORT"),
    ("targets.app.grace", "[targets.app]\ngrace = nan", "finite"),
    ("targets.app.grace", "[targets.app]\ngrace = 1e300", "at most 100 years"),
    ("defaults.schedule.every", "[defaults.schedule]\nevery = inf", "finite"),
    ("defaults.schedule.max_key_age", '[defaults.schedule]\nmax_key_age = "99999999999d"',
     "at most 100 years"),
    ("providers.count.management_key_file",
     '[providers.count]\nmanagement_key_file = "key\\u0000file"', "NUL"),
    ("vault.url", '[vault]\nurl = "https://vault\\u0000.example"', "NUL"),
    ("a[", '"a[" = 1', "unknown key"),
])
def test_found_bad_values_name_their_key(cfg_file: Path, key: str, toml: str,
                                         message: str) -> None:
    doc = _copy(BASE_DOC)
    for path, value in _flat(tomllib.loads(toml)):
        table = doc
        for part in path[:-1]:
            table = table.setdefault(part, {})
        table[path[-1]] = value
    if "management_key_file" in toml:   # one key source only
        del doc["providers"]["count"]["management_key_env"]
    cfg_file.write_text(to_toml(doc), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(cfg_file)
    assert list(info.value.problems) == [key], info.value.problems
    assert message in info.value.problems[key]
    assert run_check_config(cfg_file)[0] == 2


def _flat(doc: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], Any]]:
    for key, value in doc.items():
        if isinstance(value, dict):
            yield from _flat(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def test_problem_lines_count_only_newlines(cfg_file: Path) -> None:
    # U+2028 and U+0085 may sit in a TOML comment or string; they do not end a line.
    text = BASE.replace("[targets.app]\n", "[targets.app]\n# a\u2028b\x85c\n").replace(
        'grace = "10m"', 'grace = "soon"')
    cfg_file.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(cfg_file)
    line = text.split("\n").index('grace = "soon"') + 1
    assert info.value.problems["targets.app.grace"].endswith(f"(line {line})")


# --- mutations of a valid config --------------------------------------------------------------

KINDS = ["drop", "set", "unknown", "huge", "unicode", "nul", "deep"]


@st.composite
def mutations(draw: st.DrawFn) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    """(kind, the key it touched, the mutated document)."""
    doc = _copy(BASE_DOC)
    kind = draw(st.sampled_from(KINDS))
    if kind == "unknown":
        table = draw(st.sampled_from(tables_of(doc)))
        name = "zz_" + draw(st.text(max_size=8))
        _get(doc, table)[name] = draw(values)
        return kind, (*table, name), doc
    path = draw(st.sampled_from(paths_of(doc)))
    parent, leaf = _get(doc, path[:-1]), path[-1]
    old = parent[leaf]
    if kind == "drop":
        del parent[leaf]
    elif kind == "set":
        parent[leaf] = draw(values)
    elif kind == "huge":
        parent[leaf] = draw(st.sampled_from(["a", "9", "/", "\u00e9", "\x00"])) * draw(
            st.sampled_from([10_000, 300_000]))
    elif kind == "unicode":
        parent[leaf] = draw(st.text(st.characters(min_codepoint=0x80, codec="utf-8"), min_size=1,
                                    max_size=20))
    elif kind == "nul":
        base = old if isinstance(old, str) else "x"
        at = draw(st.integers(0, len(base)))
        parent[leaf] = base[:at] + "\x00" + base[at:]
    else:
        parent[leaf] = draw(deep)
    return kind, path, doc


def _check_mutation(kind: str, path: tuple[str, ...],
                    outcome: Config | ConfigError) -> None:
    key = dotted(path)
    if not isinstance(outcome, ConfigError):
        assert kind != "unknown" or path[:-1] in MAPS, key
        return
    problems = outcome.problems
    if not problems:   # only TOML itself can fail without a key: deep nesting
        assert kind == "deep" and "not valid TOML" in outcome.message, outcome
        return
    if kind == "unknown" and path[:-1] not in MAPS:
        assert problems == {key: problems[key]} and problems[key].startswith("unknown key")
        return
    scope = dotted(path[:-1])
    strays = [k for k in problems if not related(k, scope)]
    assert not strays, (key, problems)
    if path[-1] not in ("method", "auth_mode", "every", "cron"):  # these re-shape a table
        assert any(related(k, key) for k in problems), (key, problems)


@FUZZ
@given(mutation=mutations())
@example(mutation=("nul", ("providers", "count", "management_key_file"),
                   {**_copy(BASE_DOC), "providers": {"count": {
                       "type": "count", "base_url": "https://api.count.example",
                       "management_key_file": "key\x00file"}}}))
@example(mutation=("set", ("targets", "app", "grace"),
                   {**BASE_DOC, "targets": {"app": {**BASE_DOC["targets"]["app"],
                                                    "grace": math.nan}}}))
@example(mutation=("set", ("defaults", "schedule", "every"),
                   {**BASE_DOC, "defaults": {"schedule": {"every": math.inf}}}))
@example(mutation=("huge", ("targets", "app", "grace"),
                   {**BASE_DOC, "targets": {"app": {**BASE_DOC["targets"]["app"],
                                                    "grace": "9" * 400 + "d"}}}))
@example(mutation=("nul", ("providers", "count", "base_url"),
                   {**BASE_DOC, "providers": {"count": {
                       **BASE_DOC["providers"]["count"],
                       "base_url": "https://api.count\x00.example"}}}))
def test_mutated_config_names_the_key_or_loads(
        cfg_file: Path, mutation: tuple[str, tuple[str, ...], dict[str, Any]]) -> None:
    kind, path, doc = mutation
    cfg_file.write_text(to_toml(doc), encoding="utf-8")
    outcome = load_or_error(cfg_file)
    _check_mutation(kind, path, outcome)
    if isinstance(outcome, Config):
        _assert_sane(outcome)


def _assert_sane(config: Config) -> None:
    """A config that loads holds only values the program can use."""
    durations = [config.defaults.grace, config.defaults.lease_ttl, config.daemon.poll_interval,
                 config.daemon.shutdown_timeout, config.vault.timeout]
    for name in config.targets:
        durations += [config.grace_for(name), config.probe_for(name).timeout,
                      config.probe_for(name).interval]
        schedule = config.schedule_for(name)
        durations += [d for d in (schedule.every, schedule.jitter, schedule.max_key_age,
                                  schedule.retry_failed_after) if d is not None]
    for provider in config.providers.values():
        durations.append(provider.timeout)
        assert "\x00" not in provider.base_url
        for file in (provider.management_key_file, provider.ca_bundle):
            assert file is None or "\x00" not in str(file)
    assert all(math.isfinite(d) and d >= 0 for d in durations), durations


# --- the command line --------------------------------------------------------------------------

@settings(FUZZ, max_examples=40)
@given(mutation=mutations())
@example(mutation=("nul", ("providers", "count", "management_key_file"),
                   {**BASE_DOC, "providers": {"count": {
                       "type": "count", "base_url": "https://api.count.example",
                       "management_key_file": "key\x00file"}}}))
@example(mutation=("nul", ("vault", "auth", "token_file"),
                   {**BASE_DOC, "vault": {"url": "https://vault.example:8200",
                                          "auth": {"method": "token", "token_env": "",
                                                   "token_file": "\x00"}}}))
@example(mutation=("nul", ("vault", "auth", "token_env"),
                   {**BASE_DOC, "vault": {"url": "https://vault.example:8200",
                                          "auth": {"method": "token",
                                                   "token_env": "FUZZ\x00TOKEN"}}}))
def test_check_config_exits_0_or_2_without_a_traceback(
        cfg_file: Path, mutation: tuple[str, tuple[str, ...], dict[str, Any]]) -> None:
    _, _, doc = mutation
    cfg_file.write_text(to_toml(doc), encoding="utf-8")
    code, err = run_check_config(cfg_file)
    assert code in (0, 2), err
    assert "Traceback" not in err
    assert (code == 0) == (err == ""), err
    if code == 2:
        assert err.startswith("rotator: error: ") and str(cfg_file) in err


@settings(FUZZ, max_examples=20)
@given(data=st.binary(max_size=100))
def test_check_config_on_random_bytes(cfg_file: Path, data: bytes) -> None:
    cfg_file.write_bytes(data)
    code, err = run_check_config(cfg_file)
    assert code == 2 and "Traceback" not in err and str(cfg_file) in err


def test_check_config_with_a_key_file_that_is_not_utf8(cfg_file: Path) -> None:
    key = cfg_file.parent / "key.bin"
    key.write_bytes(b"\xff\xfe")
    doc = _copy(BASE_DOC)
    del doc["providers"]["count"]["management_key_env"]
    doc["providers"]["count"]["management_key_file"] = str(key)
    cfg_file.write_text(to_toml(doc), encoding="utf-8")
    code, err = run_check_config(cfg_file)
    assert code == 2 and "management_key_file" in err and "Traceback" not in err
    assert "not UTF-8" in err


def test_check_config_on_a_missing_file_or_a_directory(cfg_file: Path) -> None:
    for path in (cfg_file.parent / "absent.toml", cfg_file.parent):
        code, err = run_check_config(path)
        assert code == 2 and "cannot read config file" in err


# --- durations --------------------------------------------------------------------------------

@FUZZ
@given(value=st.one_of(st.text(max_size=30), st.floats(), st.integers(), st.booleans(),
                       st.none(), st.lists(st.integers(), max_size=2)))
@example(value="9" * 400 + "d")
@example(value=1e300)
def test_parse_duration_returns_a_finite_duration_or_a_value_error(value: object) -> None:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        assert str(exc)
    else:
        assert math.isfinite(seconds) and seconds >= 0
