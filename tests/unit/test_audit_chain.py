"""The audit chain's encoding (frozen), its walker, ``[audit]`` and the ``audit`` command line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from rotator.cli.main import _audit_shows_by_default, main
from rotator.config.model import load_config
from rotator.core.audit_chain import BreakKind, KeyRequired, chain_hash, encode_v1, walk_chains
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


def _chain(count: int, key: bytes | None = None, target: str = "app") -> list[dict[str, Any]]:
    rows, previous = [], ""
    for seq in range(1, count + 1):
        row = {**ROW, "target": target, "id": seq, "detail": f"event {seq}"}
        previous = chain_hash(row, seq, previous, key)
        rows.append({**row, "chain_seq": seq, "chain_hash": previous})
    return rows


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
