"""The hash chain of the audit trail: its canonical encoding, its hash, and its walker.

Every ``rotation_events`` row carries ``chain_seq`` (1, 2, 3... per target) and
``chain_hash``, a hash over the row's content, its ``chain_seq`` and the ``chain_hash`` of
the event before it of the same target. A row edited, deleted, forged or moved then no
longer links to its neighbours, and ``walk_chains`` names the first such link per target.

The hash string names its scheme: ``sha256:<hex>`` anyone can recompute (it shows an
accident or a careless edit); ``hmac-sha256:<hex>`` needs the key of ``[audit]``, so a
writer without it cannot forge a chain that verifies. The row id is not hashed: the
database assigns it as it inserts, after the hash is made; the order the id gives is
checked through ``chain_seq``, which is hashed.

FROZEN: ``encode_v1`` and the two schemes are what revision 0004 backfilled with and what
rows already carry. They never change: a new encoding is a new function and new scheme
names, and the walker keeps accepting these.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "CONTENT_COLUMNS",
    "HMAC_SHA256",
    "SHA256",
    "Break",
    "BreakKind",
    "ChainReport",
    "KeyRequired",
    "chain_hash",
    "encode_v1",
    "walk_chains",
]

SHA256 = "sha256"
HMAC_SHA256 = "hmac-sha256"
_KEYED = {SHA256: False, HMAC_SHA256: True}

# What an auditor reads of a row, in the order v1 encodes it (``chain_seq`` and the hash
# before it are encoded too; ``id`` and ``chain_hash`` itself are not).
CONTENT_COLUMNS = (
    "target", "rotation_id", "step", "kind", "action", "result", "key_id", "fingerprint",
    "vault_version", "request_id", "op_id", "detail", "at", "lease_generation",
)
_V1_TAG = "rotator-audit-chain/1"


def _canonical_value(value: Any) -> str | int | None:
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("a naive timestamp has no canonical UTC form")
        # Microseconds, always: both databases keep them, and a fixed width sorts.
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if value is None or isinstance(value, int | str):
        return value
    raise TypeError(f"no canonical form for a {type(value).__name__}")


def encode_v1(row: Mapping[str, Any], seq: int, previous: str) -> bytes:
    """The bytes v1 hashes: a compact JSON array, ASCII only (FROZEN, see the module)."""
    values = [_V1_TAG, previous, seq, *(_canonical_value(row[c]) for c in CONTENT_COLUMNS)]
    return json.dumps(values, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def chain_hash(row: Mapping[str, Any], seq: int, previous: str,
               key: bytes | None = None) -> str:
    """The ``chain_hash`` of ``row`` at ``seq`` after ``previous`` ("" for the first).

    Keyed (``hmac-sha256:``) when ``key`` is given, else ``sha256:``.
    """
    data = encode_v1(row, seq, previous)
    if key is None:
        return f"{SHA256}:{hashlib.sha256(data).hexdigest()}"
    return f"{HMAC_SHA256}:{hmac.new(key, data, hashlib.sha256).hexdigest()}"


class KeyRequired(Exception):
    """Keyed rows, and no key to check them with."""


class BreakKind(StrEnum):
    EDITED = "edited"          # the row does not match its hash
    MISSING = "missing"        # events before this one are gone (deleted)
    INSERTED = "inserted"      # a row rotator did not write (no chain hash)
    REORDERED = "reordered"    # events out of their chain order
    UNKEYED = "unkeyed"        # with a key: a hash recomputed without it


@dataclass(frozen=True, slots=True)
class Break:
    """The first broken link of one target's chain."""

    target: str
    event_id: int
    kind: BreakKind
    detail: str


@dataclass
class ChainReport:
    targets: int = 0
    events: int = 0
    breaks: list[Break] = field(default_factory=list)   # at most one per target


@dataclass
class _Chain:
    """The walk of one target so far: what the next row must carry."""

    target: str
    expected_seq: int = 1
    previous: str = ""
    keyed_seen: bool = False
    last_id: int | None = None
    found: Break | None = None
    # A row whose seq jumped ahead: (its id, the seq expected there, its seq). Deleted
    # events, unless the expected seq turns up further on (then the rows were moved).
    jump: tuple[int, int, int] | None = None

    def feed(self, row: Mapping[Any, Any], key: bytes | None) -> None:
        self.last_id = row["id"]
        if self.jump is not None:
            if row["chain_seq"] == self.jump[1]:
                event_id, expected, seq = self.jump
                self.jump = None
                self.found = Break(self.target, event_id, BreakKind.REORDERED,
                                   f"chain seq {seq} where {expected} was due; seq "
                                   f"{expected} comes later, at event {row['id']}")
            return
        if self.found is None:
            self.found = self._check(row, key)

    def _check(self, row: Mapping[Any, Any], key: bytes | None) -> Break | None:
        event_id, seq, stored = row["id"], row["chain_seq"], row["chain_hash"]
        if stored is None or seq is None:
            return self._break(event_id, BreakKind.INSERTED,
                               "no chain hash: a row rotator did not write")
        scheme = str(stored).partition(":")[0]
        if scheme not in _KEYED:
            return self._break(event_id, BreakKind.EDITED, f"unknown hash scheme {scheme!r}")
        keyed = _KEYED[scheme]
        if keyed and key is None:
            raise KeyRequired(f"the chain of {self.target!r} is keyed ({HMAC_SHA256})")
        if key is not None and not keyed and self.keyed_seen:
            return self._break(event_id, BreakKind.UNKEYED,
                               "an unkeyed hash after keyed ones: recomputed without the key")
        return self._link(row, seq, stored, key if keyed else None)

    def _link(self, row: Mapping[Any, Any], seq: int, stored: str,
              key: bytes | None) -> Break | None:
        """Whether ``row`` is the next link: its place, then its hash after the last one."""
        event_id = row["id"]
        if seq > self.expected_seq:
            self.jump = (event_id, self.expected_seq, seq)
            return None
        if seq < self.expected_seq:
            return self._break(event_id, BreakKind.REORDERED,
                               f"chain seq {seq} after seq {self.expected_seq - 1}")
        if not hmac.compare_digest(stored, chain_hash(row, seq, self.previous, key)):
            return self._break(event_id, BreakKind.EDITED,
                               "the row does not match its hash (it, or the hash of the "
                               "event before it, was rewritten)")
        self.expected_seq, self.previous = seq + 1, stored
        self.keyed_seen = self.keyed_seen or key is not None
        return None

    def _break(self, event_id: int, kind: BreakKind, detail: str) -> Break:
        return Break(self.target, event_id, kind, detail)

    def finish(self, key: bytes | None) -> Break | None:
        if self.jump is not None:
            event_id, expected, seq = self.jump
            last = f"{expected}" if seq - 1 == expected else f"{expected}-{seq - 1}"
            return self._break(event_id, BreakKind.MISSING,
                               f"chain seq {last} missing before this event (deleted)")
        if self.found is None and key is not None and not self.keyed_seen:
            assert self.last_id is not None
            return self._break(self.last_id, BreakKind.UNKEYED,
                               "no event of this chain is keyed: written before the key "
                               "was configured, or recomputed without it")
        return self.found


def walk_chains(rows: Iterable[Mapping[Any, Any]], key: bytes | None = None) -> ChainReport:
    """Check every chain in ``rows``, which come ordered by target, then id.

    One pass, holding one target's state at a time: memory does not grow with the rows.
    ``KeyRequired`` if a row is keyed and ``key`` is ``None``.
    """
    report = ChainReport()
    chain: _Chain | None = None
    for row in _counted(rows, report):
        if chain is None or row["target"] != chain.target:
            _close(chain, key, report)
            chain = _Chain(row["target"])
            report.targets += 1
        chain.feed(row, key)
    _close(chain, key, report)
    return report


def _counted(rows: Iterable[Mapping[Any, Any]],
             report: ChainReport) -> Iterator[Mapping[Any, Any]]:
    for row in rows:
        report.events += 1
        yield row


def _close(chain: _Chain | None, key: bytes | None, report: ChainReport) -> None:
    if chain is not None and (found := chain.finish(key)) is not None:
        report.breaks.append(found)
