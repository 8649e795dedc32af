"""The invariant checker behind ``rotator verify`` and the fault tests.

It compares three independent sources, the provider's live keys, Vault's current and
previous versions, and the SQL state with its audit trail, and reports every way they
disagree with the invariants of docs/architecture.md:

    vault_key_dead               the key Vault serves does not authenticate
    previous_key_dead_in_grace   a rotation is in grace but the key consumers may still
                                 hold (Vault's previous version) no longer authenticates
    leaked_key                   a key at the provider that nothing accounts for: not in
                                 Vault, not used by a running rotation, not queued for cleanup
    early_revoke                 an old key deleted before its new key was verified and
                                 stored, or before the grace window ended
    revoked_twice                an old key deleted more than once
    unverified_in_vault          a key written to Vault before it had authenticated
    unpaired_side_effect         a finished rotation's side effect without its intent or
                                 its outcome row
    two_endings                  a finished rotation whose trail does not end it exactly
                                 once, as its row says; or a running one the trail ended
    moved_backwards              a rotation's trail going back to an earlier step (other
                                 than starting over after a lost secret), or going on
                                 after its ending with anything but cleanup
    stale_writer                 an audit row written under a lease generation older than
                                 one that had already written: by a holder that had lost
                                 its lease
    revoked_key_alive            an old key whose probe after its deletion found it still
                                 authenticating (the provider did not revoke it), and that
                                 still does: probed again here, with Vault's version of it
    audit_chain                  the audit trail's hash chain is broken: a row edited,
                                 deleted, forged or moved (``rotator audit verify``)
    vault_secret_missing         Vault has no secret (or no current version, or no field)
                                 at the target's path: consumers reading it get nothing. No
                                 key at the provider is called leaked while Vault cannot say
                                 which one it serves (a wrong vault_path would make every key
                                 in use look leaked)
    could_not_check              a source could not be read (Vault denied or is down, the
                                 provider is unreachable or answers 5xx, no chain key): what,
                                 the status, and the next step. Nothing is derived from the
                                 missing read: a target whose served key is unknown gets no
                                 vault_key_dead, and its account no leaked_key
    orphan                       a running rotation or a queued deletion of a target no
                                 longer in the config (``app.orphans``), not done yet:
                                 whether the next run finishes it, or what to do

Reads only: it never changes anything, so operators can run it at any time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from rotator.app.orphans import Orphan
from rotator.core.audit_chain import ChainReport, KeyRequired
from rotator.core.errors import (
    ProviderUnavailable,
    RotatorError,
    SecretNotFound,
    Unauthorized,
    VaultError,
    VaultUnavailable,
)
from rotator.core.model import KeyRecord, Rotation, Status, Step, StoredEvent
from rotator.core.ports import KeyProvider, RotationReader, SecretStore
from rotator.core.secret import Secret
from rotator.core.target import TargetSpec
from rotator.core.vocabulary import AuditAction, AuditResult, EventKind, VaultMetadataKey

__all__ = ["Finding", "FindingKind", "TargetReads", "chain_findings", "check_targets",
           "orphan_findings", "read_target"]


class FindingKind(StrEnum):
    VAULT_KEY_DEAD = "vault_key_dead"
    PREVIOUS_KEY_DEAD_IN_GRACE = "previous_key_dead_in_grace"
    LEAKED_KEY = "leaked_key"
    EARLY_REVOKE = "early_revoke"
    REVOKED_TWICE = "revoked_twice"
    UNVERIFIED_IN_VAULT = "unverified_in_vault"
    UNPAIRED_SIDE_EFFECT = "unpaired_side_effect"
    TWO_ENDINGS = "two_endings"
    MOVED_BACKWARDS = "moved_backwards"
    STALE_WRITER = "stale_writer"
    REVOKED_KEY_ALIVE = "revoked_key_alive"
    AUDIT_CHAIN = "audit_chain"
    VAULT_SECRET_MISSING = "vault_secret_missing"  # noqa: S105 (a finding, no password)
    COULD_NOT_CHECK = "could_not_check"
    ORPHAN = "orphan"


@dataclass(frozen=True, slots=True)
class Finding:
    kind: FindingKind
    target: str
    detail: str
    rotation_id: str | None = None
    key_id: str | None = None


def check_targets(specs: Iterable[TargetSpec], providers: Mapping[str, KeyProvider],
                  store: SecretStore, repo: RotationReader) -> list[Finding]:
    """Every finding for every target; keys shared by targets of one account count once."""
    specs = list(specs)
    served: dict[str, set[str]] = defaultdict(set)     # service account -> keys in use
    # Accounts with a target whose served key is unknown: a key not found in use there may
    # well be the one Vault serves, so none is called leaked.
    unknown: set[str] = set()
    findings: list[Finding] = []
    live: dict[str, tuple[str, dict[str, str]]] = {}   # account -> (a target, its keys)
    for spec in specs:
        target_findings, in_use, keys = _check_one(spec, providers[spec.provider], store, repo)
        findings += target_findings
        if in_use is None:
            unknown.add(spec.service_account)
        else:
            served[spec.service_account] |= in_use
        if keys is not None:
            live.setdefault(spec.service_account, (spec.name, keys))
    for account, (target, keys) in live.items():
        if account in unknown:
            continue
        for key_id, name in sorted(keys.items()):
            if key_id not in served[account]:
                findings.append(Finding(
                    FindingKind.LEAKED_KEY, target,
                    f"key {key_id} ({name!r}) exists at the provider but is not in Vault, "
                    "not used by a running rotation and not queued for cleanup",
                    key_id=key_id))
    return findings


def orphan_findings(found: Iterable[Orphan]) -> list[Finding]:
    """Each orphaned rotation or queued deletion, with what to do about it."""
    return [Finding(FindingKind.ORPHAN, o.target, o.detail, o.rotation_id, o.key_id)
            for o in found]


def chain_findings(walk: Callable[[str], ChainReport],
                   targets: Iterable[str]) -> list[Finding]:
    """The first broken link of each target's audit chain, ``walk`` walking one target."""
    findings: list[Finding] = []
    for target in targets:
        try:
            report = walk(target)
        except KeyRequired as exc:
            findings.append(Finding(FindingKind.COULD_NOT_CHECK, target,
                                    f"the audit chain: {exc}: set [audit] chain_key_env or "
                                    "chain_key_file, then run verify again"))
            continue
        findings += [Finding(FindingKind.AUDIT_CHAIN, target,
                             f"event {b.event_id}: {b.kind.value}: {b.detail}")
                     for b in report.breaks]
    return findings


def _management_auth(spec: TargetSpec, store: SecretStore,
                     findings: list[Finding]) -> Secret | None:
    """The key to list the account's keys with: the admin key, or (self-rotation) the one
    Vault holds for its target; None in self mode (or when Vault cannot give it)."""
    ref = spec.management_key_ref
    if ref is None:
        return spec.management_key
    try:
        return store.read_current(ref).secret
    except RotatorError as exc:
        findings.append(_could_not_check(
            spec, f"the management key in Vault at {ref.mount}/{ref.path}", exc))
        return None


@dataclass(frozen=True, slots=True)
class TargetReads:
    """What verify and reconcile read of one target from Vault, the provider and SQL.

    ``findings``: what the reads themselves found (``could_not_check``,
    ``vault_secret_missing``, ``vault_key_dead``, ``previous_key_dead_in_grace``).
    ``in_use``: the key ids the target accounts for (Vault's, its running rotation's, its
    queued cleanups), ``None`` when the key Vault serves is unknown. ``keys``: its
    account's live keys, ``None`` when they could not be listed.
    """

    findings: list[Finding]
    in_use: frozenset[str] | None
    keys: tuple[KeyRecord, ...] | None
    rotations: list[Rotation]

    @property
    def vault_key_dead(self) -> bool:
        return any(f.kind is FindingKind.VAULT_KEY_DEAD for f in self.findings)


def read_target(spec: TargetSpec, provider: KeyProvider, store: SecretStore,
                repo: RotationReader) -> TargetReads:
    """One target's reads; nothing is derived from a read that failed (see ``TargetReads``)."""
    findings: list[Finding] = []
    in_use: set[str] = set()
    rotations = repo.rotations(spec.name)
    running = next((r for r in rotations if r.status is Status.RUNNING), None)
    for rot in (running,) if running else ():
        in_use |= {k for k in (rot.old_key_id, rot.new_key_id) if k}
    in_use |= {c.key_id for c in repo.pending_cleanups(spec.name)}

    served_secret = None
    served_known = False
    where = f"{spec.ref.mount}/{spec.ref.path}"
    try:
        current = store.read_current(spec.ref)
    except SecretNotFound as exc:
        findings.append(Finding(
            FindingKind.VAULT_SECRET_MISSING, spec.name,
            f"Vault has no current key at {where} field {spec.ref.field!r}: {exc}; "
            "consumers reading it get nothing, and no key at the provider is called leaked "
            "while Vault cannot say which one it serves: check vault_mount and vault_path of "
            f"[targets.{spec.name}], or restore the secret"))
    except RotatorError as exc:
        findings.append(_could_not_check(spec, f"Vault's current key at {where}", exc))
    else:
        served_secret = current.secret
        try:
            in_use.add(provider.whoami(current.secret).key_id)
        except Unauthorized as exc:
            served_known = True        # a dead key is no live key at the provider
            findings.append(Finding(FindingKind.VAULT_KEY_DEAD, spec.name,
                                    f"Vault's current key: {exc}"))
        except RotatorError as exc:
            findings.append(_could_not_check(
                spec, f"the provider's answer for Vault's current key at {where}", exc))
        else:
            served_known = True
            findings += _previous_in_grace(spec, provider, store, running, current.version,
                                           current.custom_metadata)

    keys: tuple[KeyRecord, ...] | None = None
    auth = _management_auth(spec, store, findings) or served_secret
    if auth is not None:
        try:
            keys = tuple(provider.list_keys(spec.service_account, auth).keys)
        except RotatorError as exc:
            findings.append(_could_not_check(
                spec, f"the provider's keys of {spec.service_account}", exc))
    return TargetReads(findings, frozenset(in_use) if served_known else None, keys,
                       rotations)


def _check_one(spec: TargetSpec, provider: KeyProvider, store: SecretStore,
               repo: RotationReader) -> tuple[list[Finding], frozenset[str] | None,
                                               dict[str, str] | None]:
    """Findings of one target, the key ids it accounts for (``None`` when the key Vault
    serves is unknown), and its account's live keys (``None`` when they could not be
    listed)."""
    reads = read_target(spec, provider, store, repo)
    findings = list(reads.findings)
    by_rotation: dict[str, list[StoredEvent]] = defaultdict(list)
    events = repo.events(target=spec.name)
    for event in events:
        by_rotation[event.rotation_id].append(event)
    findings += _stale_writers(spec.name, events)
    for rot in reads.rotations:
        findings += _audit_findings(rot, by_rotation.get(rot.rotation_id, []))
        findings += _revoked_alive(spec, provider, store, rot,
                                   by_rotation.get(rot.rotation_id, []))
    keys = None if reads.keys is None else {k.key_id: k.name for k in reads.keys}
    return findings, reads.in_use, keys


def _could_not_check(spec: TargetSpec, what: str, exc: RotatorError) -> Finding:
    """``what`` could not be read: the error (with its status) and what to do next."""
    return Finding(FindingKind.COULD_NOT_CHECK, spec.name,
                   f"could not read {what}: {exc}; nothing is concluded from it: "
                   f"{_next_step(spec, exc)}, then run the command again")


def _next_step(spec: TargetSpec, exc: RotatorError) -> str:
    provider = f"[providers.{spec.provider}]"
    if isinstance(exc, VaultUnavailable):
        return "check that Vault ([vault] url) is reachable and unsealed"
    if isinstance(exc, VaultError):
        if exc.context.get("status") in ("401", "403"):
            return "check the Vault credentials of [vault.auth] and their policy on this path"
        return f"check [vault] and the vault_mount and vault_path of [targets.{spec.name}]"
    if isinstance(exc, ProviderUnavailable):
        return f"check that the provider ({provider} base_url) is reachable and answering"
    if isinstance(exc, Unauthorized):
        return (f"check the key it was asked with ({provider} management key, or in self "
                "mode Vault's current key)")
    return f"check {provider} and the provider's status"


def _previous_in_grace(spec: TargetSpec, provider: KeyProvider, store: SecretStore,
                       running: Rotation | None, version: int,
                       metadata: Mapping[str, str]) -> list[Finding]:
    if (running is None or running.step is not Step.GRACE or version < 2
            or metadata.get(VaultMetadataKey.ROTATION_ID) != running.rotation_id):
        return []
    what = f"Vault version {version - 1}, which consumers may still hold"
    try:
        previous = store.read_version(spec.ref, version - 1)
        provider.whoami(previous.secret)
    except Unauthorized as exc:
        return [Finding(FindingKind.PREVIOUS_KEY_DEAD_IN_GRACE, spec.name,
                        f"{what} until {running.grace_ends_at}: {exc}", running.rotation_id,
                        running.old_key_id)]
    except RotatorError as exc:
        return [_could_not_check(spec, what, exc)]
    return []


def _revoked_alive(spec: TargetSpec, provider: KeyProvider, store: SecretStore,
                   rot: Rotation, events: list[StoredEvent]) -> list[Finding]:
    """The old key's last probe after its deletion said ``still_valid``: is it still so?

    Probed again with Vault's version of it, so a key the operator has since deleted by
    hand stops being a finding; one that cannot be probed again stays one.
    """
    probes = [e for e in events if e.action == AuditAction.PROBE_REVOKED]
    if not probes or probes[-1].result != AuditResult.STILL_VALID:
        return []
    seen = probes[-1]
    try:
        if rot.old_version is None:
            raise SecretNotFound("the rotation recorded no Vault version for it")
        who = provider.whoami(store.read_version(spec.ref, rot.old_version).secret)
    except Unauthorized:
        return []
    except RotatorError as exc:
        now = f"it could not be probed again: {exc}"
    else:
        now = f"it still authenticates as {who.service_account_id}/{who.key_id}"
    return [Finding(FindingKind.REVOKED_KEY_ALIVE, spec.name,
                    f"old key {seen.key_id} was deleted, but its probe (row {seen.id}, "
                    f"{seen.at}) found it authenticating: the provider did not revoke it; "
                    f"{now}. Revoke it at the provider by hand", rot.rotation_id,
                    seen.key_id)]


def _audit_findings(rot: Rotation, events: list[StoredEvent]) -> list[Finding]:
    return [Finding(kind, rot.target, detail, rot.rotation_id, key_id)
            for kind, detail, key_id in (*_pairing(rot, events), *_ordering(rot, events),
                                         *_endings(rot, events), *_progress(events))]


_Problem = tuple[FindingKind, str, str | None]


def _pairing(rot: Rotation, events: list[StoredEvent]) -> list[_Problem]:
    """Every side effect has an intent row and an outcome row (once the rotation is over)."""
    intents = {e.op_id: e for e in events if e.kind is EventKind.INTENT}
    outcomes = {e.op_id: e for e in events if e.kind is EventKind.OUTCOME}
    problems: list[_Problem] = []
    if rot.is_terminal:
        problems += [(FindingKind.UNPAIRED_SIDE_EFFECT,
                      f"{e.action} intent (row {e.id}) has no outcome", e.key_id)
                     for op_id, e in intents.items() if op_id not in outcomes]
    problems += [(FindingKind.UNPAIRED_SIDE_EFFECT,
                  f"{e.action} outcome (row {e.id}) has no intent", e.key_id)
                 for op_id, e in outcomes.items() if op_id not in intents]
    return problems


def _ordering(rot: Rotation, events: list[StoredEvent]) -> list[_Problem]:
    """Vault gets only verified keys; the old key goes after store, read-back and grace."""
    problems: list[_Problem] = []
    verified: set[str] = set()        # key ids a probe said ok for
    # A read-back that matched is the proof the new key is in Vault (a resumed rotation
    # has it even when its interrupted vault_write has an "unknown" outcome).
    stored = grace_over = False
    deletes = 0
    for event in events:
        ok, intent = event.result == AuditResult.OK, event.kind is EventKind.INTENT
        if event.action == AuditAction.PROBE and ok and event.key_id:
            verified.add(event.key_id)
        elif event.action == AuditAction.VAULT_WRITE and intent and event.key_id not in verified:
            problems.append((FindingKind.UNVERIFIED_IN_VAULT,
                             f"vault_write of key {event.key_id} (row {event.id}) before "
                             "any successful probe of it", event.key_id))
        elif event.action == AuditAction.READ_BACK and ok:
            stored = True
        elif event.action == AuditAction.GRACE_OVER:
            grace_over = True
        elif event.action == AuditAction.REVOKE_KEY and intent:
            too_soon = rot.grace_ends_at is not None and event.at < rot.grace_ends_at
            if too_soon or not (stored and grace_over):
                problems.append((FindingKind.EARLY_REVOKE,
                                 f"delete of old key {event.key_id} (row {event.id}, "
                                 f"{event.at}) before the new key was verified, stored and "
                                 f"read back and the grace window (until {rot.grace_ends_at})"
                                 " had ended", event.key_id))
        elif event.action == AuditAction.REVOKE_KEY and ok:
            deletes += 1              # ALREADY_GONE is not a second delete
    if deletes > 1:
        problems.append((FindingKind.REVOKED_TWICE, f"old key deleted {deletes} times",
                         rot.old_key_id))
    return problems


_ENDINGS = frozenset({AuditAction.COMPLETED, AuditAction.ROLLED_BACK, AuditAction.FAILED})
# What may follow a rotation's ending: the cleanup queue's work on the keys it left, and
# the probe of an old key whose deferred deletion the queue made.
_AFTER_ENDING = frozenset({AuditAction.CLEANUP_KEY, AuditAction.PROBE_REVOKED})
# Steps in the order a rotation moves through them; a rollback comes after any forward step.
_STEP_ORDER = {step.value: rank for rank, step in enumerate(
    (Step.PLAN, Step.CREATE, Step.VERIFY, Step.STORE, Step.GRACE, Step.REVOKE, Step.ROLLBACK,
     Step.DONE))}


def _endings(rot: Rotation, events: list[StoredEvent]) -> list[_Problem]:
    """One ending, the one the row says, and only on a finished rotation."""
    ends = [e for e in events if e.kind is EventKind.NOTE and e.action in _ENDINGS]
    problems: list[_Problem] = []
    if len(ends) > 1:
        listed = ", ".join(f"{e.action} (row {e.id})" for e in ends)
        problems.append((FindingKind.TWO_ENDINGS,
                         f"the trail ends this rotation {len(ends)} times: {listed}", None))
    if not ends and rot.is_terminal:
        problems.append((FindingKind.TWO_ENDINGS, f"the rotation ended {rot.status.value}, "
                         "but its trail has no ending note", None))
    if ends and not rot.is_terminal:
        problems.append((FindingKind.TWO_ENDINGS, f"the rotation is running, but its trail "
                         f"ended it {ends[0].action} (row {ends[0].id})", None))
    elif ends and ends[-1].action != rot.status.value:
        problems.append((FindingKind.TWO_ENDINGS, f"the rotation ended {rot.status.value}, "
                         f"but its trail ends it {ends[-1].action} (row {ends[-1].id})", None))
    after = next((e for e in events if ends and e.id > ends[0].id
                  and e.action not in _AFTER_ENDING), None)
    if after is not None:
        problems.append((FindingKind.MOVED_BACKWARDS, f"{after.kind} {after.action} (row "
                         f"{after.id}) written after the rotation ended (row {ends[0].id})",
                         after.key_id))
    return problems


def _progress(events: list[StoredEvent]) -> list[_Problem]:
    """The trail never goes back to an earlier step, but to ``create`` after a lost secret."""
    reached, problems = -1, []
    for event in events:
        rank = _STEP_ORDER.get(event.step)
        if rank is None:
            continue
        if rank < reached:
            problems.append((FindingKind.MOVED_BACKWARDS, f"{event.kind} {event.action} "
                             f"(row {event.id}) at step {event.step}, after the rotation had "
                             "reached a later step", event.key_id))
        reached = max(reached, rank)
        if event.action == AuditAction.SECRET_LOST:
            reached = _STEP_ORDER[Step.CREATE.value]   # it starts over at create
    return problems


def _stale_writers(target: str, events: list[StoredEvent]) -> list[Finding]:
    """Rows written under a lease generation after a newer one had already written."""
    newest: StoredEvent | None = None
    findings: list[Finding] = []
    for event in events:
        generation = event.lease_generation
        if generation is None:
            continue     # written before the schema had lease generations
        if newest is not None and generation < (newest.lease_generation or 0):
            findings.append(Finding(
                FindingKind.STALE_WRITER, target,
                f"{event.kind} {event.action} (row {event.id}) written under lease "
                f"generation {generation}, after generation {newest.lease_generation} "
                f"had taken over (row {newest.id})", event.rotation_id, event.key_id))
        elif newest is None or generation > (newest.lease_generation or 0):
            newest = event
    return findings
