"""The audit chain's encoding (frozen), its walker, ``[audit]`` and the ``audit`` command line."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any

import pytest

from rotator.cli.main import _audit_shows_by_default, main
from rotator.config.model import load_config
from rotator.core.audit_chain import (
    Break,
    BreakKind,
    ChainReport,
    KeyRequired,
    chain_hash,
    encode_v1,
    walk_chains,
)
from rotator.core.errors import ConfigError
from tests.unit.test_config import VALID, write

ROW = {"target": "app", "rotation_id": "rot_1", "step": "create", "kind": "intent",
       "action": "create_key", "result": None, "key_id": "key_1", "fingerprint": "sha256:abc",
       "vault_version": 3, "request_id": None, "op_id": "op", "detail": 'é "q"',
       "at": datetime(2026, 11, 1, 13, 0, 0, 5, tzinfo=timezone(timedelta(hours=1))),
       "lease_generation": 2}


def test_the_v1_encoding_and_hashes_never_change() -> None:
    # Revision 0004 backfilled with these and rows carry them: a change breaks every chain.
    assert encode_v1(ROW, 1, "") == (
        b'["rotator-audit-chain/1","",1,"app","rot_1","create","intent","create_key",null,'
        b'"key_1","sha256:abc",3,null,"op","\\u00e9 \\"q\\"","2026-11-01T12:00:00.000005Z",2]')
    assert chain_hash(ROW, 1, "") == (
        "sha256:1f2c9a7e2f8e0ffc3c794ba1620af6f79b069ae10c14f5feab7d5a17e64f7219")
    assert chain_hash(ROW, 1, "", b"k") == (
        "hmac-sha256:d83f64d12706bd12ade6139e38ce303cc7902df69a5c7026547a7954014eb981")


def test_a_timestamp_is_encoded_in_one_utc_form_whatever_its_zone() -> None:
    utc = {**ROW, "at": ROW["at"].astimezone(UTC)}
    assert encode_v1(utc, 1, "") == encode_v1(ROW, 1, "")
    with pytest.raises(ValueError, match="naive"):
        encode_v1({**ROW, "at": datetime(2026, 11, 1)}, 1, "")


def _linked(target: str, keys: list[bytes | None], first_id: int = 1) -> list[dict[str, Any]]:
    """One target's chain, in order: row n hashed with ``keys[n]`` (``None``: sha256)."""
    rows, previous = [], ""
    for seq, key in enumerate(keys, start=1):
        row = {**ROW, "target": target, "id": first_id + seq - 1, "detail": f"event {seq}"}
        previous = chain_hash(row, seq, previous, key)
        rows.append({**row, "chain_seq": seq, "chain_hash": previous})
    return rows


def _chain(count: int, key: bytes | None = None, target: str = "app") -> list[dict[str, Any]]:
    return _linked(target, [key] * count)


def test_the_walker_names_the_first_broken_link_of_each_target() -> None:
    clean = _chain(5)
    assert walk_chains(clean).breaks == []
    edited = [dict(r) for r in clean]
    edited[1]["detail"] = "changed"
    edited[3]["detail"] = "changed too"           # a later break is not reported
    deleted = clean[:2] + clean[4:]
    swapped = [clean[0], clean[2], clean[1], *clean[3:]]
    forged = [*clean, {**ROW, "id": 6, "chain_seq": None, "chain_hash": None}]
    cases = [(edited, 2, BreakKind.EDITED), (deleted, 5, BreakKind.MISSING),
             (swapped, 3, BreakKind.REORDERED), (forged, 6, BreakKind.INSERTED)]
    for rows, event_id, kind in cases:
        [found] = walk_chains(rows).breaks
        assert (found.event_id, found.kind) == (event_id, kind), found
    both = walk_chains([*deleted, *_chain(3, target="web")])
    assert (both.targets, both.events, [b.target for b in both.breaks]) == (2, 6, ["app"])


def test_with_a_key_the_walker_refuses_unkeyed_hashes_and_needs_the_key() -> None:
    keyed = _chain(3, b"key")
    assert walk_chains(keyed, b"key").breaks == []
    with pytest.raises(KeyRequired):
        walk_chains(keyed)
    [wrong] = walk_chains(keyed, b"guess").breaks
    assert (wrong.event_id, wrong.kind) == (1, BreakKind.EDITED)
    [unkeyed] = walk_chains(_chain(3), b"key").breaks
    assert (unkeyed.event_id, unkeyed.kind) == (3, BreakKind.UNKEYED)
    # Rows from before the key, then keyed ones after them: a clean chain.
    prefix = _chain(2)
    row = {**ROW, "id": 3, "detail": "keyed"}
    after = {**row, "chain_seq": 3, "chain_hash": chain_hash(row, 3, prefix[-1]["chain_hash"],
                                                            b"key")}
    assert walk_chains([*prefix, after], b"key").breaks == []
    # ...but an unkeyed row after a keyed one was rehashed without the key.
    row4 = {**ROW, "id": 4, "detail": "rehashed"}
    rehashed = {**row4, "chain_seq": 4, "chain_hash": chain_hash(row4, 4, after["chain_hash"])}
    [found] = walk_chains([*prefix, after, rehashed], b"key").breaks
    assert (found.event_id, found.kind) == (4, BreakKind.UNKEYED)


def test_the_encoding_does_not_depend_on_the_hosts_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = encode_v1(ROW, 1, "")
    try:
        for zone in ("Asia/Kolkata", "America/New_York"):
            monkeypatch.setenv("TZ", zone)
            time.tzset()
            assert encode_v1(ROW, 1, "") == expected
    finally:
        monkeypatch.undo()
        time.tzset()


class _NoOffset(tzinfo):
    """A zone that knows no offset: aware in form, naive in fact."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None


def test_only_a_timestamp_with_an_offset_and_the_plain_types_have_a_canonical_form() -> None:
    for naive in (datetime(2026, 11, 1), datetime(2026, 11, 1, tzinfo=_NoOffset())):
        with pytest.raises(ValueError) as info:
            encode_v1({**ROW, "at": naive}, 1, "")
        assert str(info.value) == "a naive timestamp has no canonical UTC form"
    with pytest.raises(TypeError) as wrong:
        encode_v1({**ROW, "vault_version": 3.0}, 1, "")
    assert str(wrong.value) == "no canonical form for a float"


# The walker's report, pinned whole: the counts, and each break's target, event id, kind
# and wording (what `rotator audit verify` prints).
EDITED = ("the row does not match its hash (it, or the hash of the event before it, was "
          "rewritten)")
INSERTED = "no chain hash: a row rotator did not write"
UNKEYED_AFTER = "an unkeyed hash after keyed ones: recomputed without the key"
NEVER_KEYED = ("no event of this chain is keyed: written before the key was configured, or "
               "recomputed without it")
KEY = b"key"
APP = _linked("app", [None] * 5)


def _with(row: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**row, **changes}


WALKS: dict[str, tuple[list[dict[str, Any]], bytes | None, ChainReport]] = {
    "nothing": ([], None, ChainReport(0, 0, [])),
    "clean": (APP, None, ChainReport(1, 5, [])),
    "edited, and a later edit not reported": (
        [APP[0], _with(APP[1], detail="x"), APP[2], _with(APP[3], detail="y"), APP[4]], None,
        ChainReport(1, 5, [Break("app", 2, BreakKind.EDITED, EDITED)])),
    "one deleted": (
        [*APP[:2], *APP[3:]], None,
        ChainReport(1, 4, [Break("app", 4, BreakKind.MISSING,
                                 "chain seq 3 missing before this event (deleted)")])),
    "two deleted": (
        [*APP[:2], APP[4]], None,
        ChainReport(1, 3, [Break("app", 5, BreakKind.MISSING,
                                 "chain seq 3-4 missing before this event (deleted)")])),
    "the last ones deleted": (APP[:3], None, ChainReport(1, 3, [])),
    "swapped": (
        [APP[0], APP[2], APP[1], *APP[3:]], None,
        ChainReport(1, 5, [Break("app", 3, BreakKind.REORDERED,
                                 "chain seq 3 where 2 was due; seq 2 comes later, at event 2")])),
    "moved to the end": (
        [APP[0], *APP[2:], _with(APP[1], id=9)], None,
        ChainReport(1, 5, [Break("app", 3, BreakKind.REORDERED,
                                 "chain seq 3 where 2 was due; seq 2 comes later, at event 9")])),
    "an old seq again": (
        [*APP[:3], _with(APP[0], id=4)], None,
        ChainReport(1, 4, [Break("app", 4, BreakKind.REORDERED, "chain seq 1 after seq 3")])),
    "forged": (
        [*APP, {**ROW, "id": 6, "chain_seq": None, "chain_hash": None}], None,
        ChainReport(1, 6, [Break("app", 6, BreakKind.INSERTED, INSERTED)])),
    "no hash": (
        [*APP[:2], _with(APP[2], chain_hash=None)], None,
        ChainReport(1, 3, [Break("app", 3, BreakKind.INSERTED, INSERTED)])),
    "no seq": (
        [_with(APP[0], chain_seq=None), *APP[1:]], None,
        ChainReport(1, 5, [Break("app", 1, BreakKind.INSERTED, INSERTED)])),
    "an unknown scheme": (
        [_with(APP[0], chain_hash="md5:" + "0" * 32)], None,
        ChainReport(1, 1, [Break("app", 1, BreakKind.EDITED, "unknown hash scheme 'md5'")])),
    "a scheme, then more colons": (
        [_with(APP[0], chain_hash=APP[0]["chain_hash"] + ":00")], None,
        ChainReport(1, 1, [Break("app", 1, BreakKind.EDITED, EDITED)])),
    "keyed": (_linked("app", [KEY] * 3), KEY, ChainReport(1, 3, [])),
    "keyed, the wrong key": (
        _linked("app", [KEY] * 3), b"guess",
        ChainReport(1, 3, [Break("app", 1, BreakKind.EDITED, EDITED)])),
    "unkeyed, then keyed": (_linked("app", [None, None, KEY, KEY]), KEY, ChainReport(1, 4, [])),
    "unkeyed after keyed": (
        _linked("app", [None, KEY, None, KEY]), KEY,
        ChainReport(1, 4, [Break("app", 3, BreakKind.UNKEYED, UNKEYED_AFTER)])),
    "never keyed, with a key": (
        APP[:3], KEY, ChainReport(1, 3, [Break("app", 3, BreakKind.UNKEYED, NEVER_KEYED)])),
    "never keyed and edited, with a key": (
        [APP[0], _with(APP[1], detail="x"), APP[2]], KEY,
        ChainReport(1, 3, [Break("app", 2, BreakKind.EDITED, EDITED)])),
    "never keyed and one deleted, with a key": (
        [APP[0], APP[2]], KEY,
        ChainReport(1, 2, [Break("app", 3, BreakKind.MISSING,
                                 "chain seq 2 missing before this event (deleted)")])),
    "three targets": (
        [*APP[:2], APP[4], *_linked("web", [None] * 3, 10),
         *(_with(r, detail="x") if r["id"] == 21 else r for r in _linked("db", [None] * 2, 20))],
        None,
        ChainReport(3, 8, [Break("app", 5, BreakKind.MISSING,
                                 "chain seq 3-4 missing before this event (deleted)"),
                           Break("db", 21, BreakKind.EDITED, EDITED)])),
    "a target never keyed, then a keyed one": (
        [*_linked("app", [None] * 2), *_linked("web", [KEY] * 2, 10)], KEY,
        ChainReport(2, 4, [Break("app", 2, BreakKind.UNKEYED, NEVER_KEYED)])),
    "a keyed target, then one never keyed": (
        [*_linked("app", [KEY] * 2), *_linked("web", [None] * 2, 10)], KEY,
        ChainReport(2, 4, [Break("web", 11, BreakKind.UNKEYED, NEVER_KEYED)])),
}


@pytest.mark.parametrize("case", list(WALKS))
def test_the_walk_reports_exactly_this(case: str) -> None:
    rows, key, expected = WALKS[case]
    assert walk_chains(rows, key) == expected


@pytest.mark.parametrize("keys", [[KEY], [None, KEY]])
def test_a_keyed_row_and_no_key_is_refused_naming_the_target(keys: list[bytes | None]) -> None:
    with pytest.raises(KeyRequired) as info:
        walk_chains(_linked("app", keys))
    assert str(info.value) == "the chain of 'app' is keyed (hmac-sha256)"


@pytest.mark.parametrize(("argv", "expected"), [
    (["audit"], ["audit", "show"]),
    (["audit", "app", "--since", "1d"], ["audit", "show", "app", "--since", "1d"]),
    (["-c", "x.toml", "audit", "--format", "csv"],
     ["-c", "x.toml", "audit", "show", "--format", "csv"]),
    (["--log-level", "debug", "audit", "verify"], ["--log-level", "debug", "audit", "verify"]),
    (["audit", "export", "--format", "csv"], ["audit", "export", "--format", "csv"]),
    (["audit", "show", "verify"], ["audit", "show", "verify"]),
    (["audit", "--help"], ["audit", "--help"]),
    (["verify", "audit"], ["verify", "audit"]),
])
def test_audit_without_an_action_shows(argv: list[str], expected: list[str]) -> None:
    assert _audit_shows_by_default(argv) == expected


AUDIT = '\n[audit]\nchain_key_env = "ROTATOR_CHAIN_KEY"\n'


def test_audit_needs_exactly_one_key_source(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, VALID)).audit is None
    config = load_config(write(tmp_path, VALID + AUDIT)).audit
    assert config is not None and config.chain_key_env == "ROTATOR_CHAIN_KEY"
    for text in ("\n[audit]\n", AUDIT + 'chain_key_file = "/k"\n'):
        with pytest.raises(ConfigError) as info:
            load_config(write(tmp_path, VALID + text))
        problem = info.value.problems["audit.chain_key_env/chain_key_file"]
        assert "exactly one source" in problem


def test_check_config_reads_the_chain_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TEST_COUNT_KEY", "admin-key")
    monkeypatch.setenv("TEST_VAULT_TOKEN", "vault-token")
    monkeypatch.delenv("ROTATOR_CHAIN_KEY", raising=False)
    path = write(tmp_path, VALID + AUDIT)
    assert main(["check-config", str(path)]) == 2
    assert "audit.chain_key_env" in capsys.readouterr().err
    monkeypatch.setenv("ROTATOR_CHAIN_KEY", "s3cret-chain-key")
    assert main(["check-config", str(path)]) == 0
    assert "s3cret-chain-key" not in capsys.readouterr().out
