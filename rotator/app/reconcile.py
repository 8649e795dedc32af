"""``rotator reconcile [TARGET...] [--fix]``: keys at the provider that no rotation accounts for.

A key is stray when none of the targets of its account (the configured ones, whichever
were named) accounts for it: not the key Vault serves, not the old or new key of a
running rotation (a grace window included, any target of the account, one no longer in
the config included), not under the name of a running rotation's key (``key_name``: a
create whose outcome is not recorded yet), and not queued for cleanup. The reads are
verify's (``read_target``), with its rule: a read that failed proves nothing, so an
account with any target whose served key is unknown, or whose keys could not be listed,
is "could not check" and nothing of it is called stray or deleted.

With ``fix``, the leases of every configured target of the account are taken first (none
of them can be mid-rotation meanwhile; a live holder makes the account "could not check"
with its name), the reads are made under them, and each stray key is deleted through the
audit trail under the lease of the target it is reported for. A target whose Vault key
does not authenticate has its strays reported, never deleted: consumers may be running on
a key from elsewhere until Vault is fixed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rotator.app.orphans import Configured, Orphan, orphans
from rotator.app.runtime import Runtime
from rotator.app.verify import FindingKind, TargetReads, read_target
from rotator.core.errors import LeaseLost, RotatorError
from rotator.core.model import KeyRecord, key_name
from rotator.core.ports import Lease
from rotator.core.target import TargetSpec
from rotator.engine.management import bearer
from rotator.engine.strays import StrayDeleter, new_reconcile_id

__all__ = ["ReconcileReport", "StrayKey", "Unchecked", "reconcile"]


@dataclass(frozen=True, slots=True)
class StrayKey:
    target: str                 # the (first named) target of its account it is reported for
    service_account: str
    key: KeyRecord
    # found (not asked to fix), deleted, already_gone, kept (not deleted: see note),
    # failed (its deletion failed: see note)
    outcome: str
    note: str | None = None

    @property
    def remains(self) -> bool:
        """Still at the provider after this run."""
        return self.outcome not in ("deleted", "already_gone")


@dataclass(frozen=True, slots=True)
class Unchecked:
    target: str
    reason: str


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    checked: int
    strays: list[StrayKey] = field(default_factory=list)
    unchecked: list[Unchecked] = field(default_factory=list)
    orphans: list[Orphan] = field(default_factory=list)


def reconcile(rt: Runtime, names: list[str], *, fix: bool, actor: str, holder: str,
              with_orphans: bool) -> ReconcileReport:
    """The stray keys of the accounts of ``names`` (deleted with ``fix``), the targets
    that could not be checked, and (``with_orphans``) the orphaned work in SQL."""
    specs = {name: rt.spec(name) for name in sorted(rt.config.targets)}
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name, spec in specs.items():
        groups[(spec.provider, spec.service_account)].append(name)
    named: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name in names:
        named[(specs[name].provider, specs[name].service_account)].append(name)
    strays: list[StrayKey] = []
    unchecked: list[Unchecked] = []
    run_id = new_reconcile_id(rt.clock.now())
    for account, asked in named.items():
        group = [specs[n] for n in groups[account]]
        with _leases(rt, group, holder, fix) as leases:
            if isinstance(leases, str):
                unchecked += [Unchecked(n, leases) for n in asked]
                continue
            found, why_not = _account(rt, group, asked[0])
            if why_not:
                unchecked += [Unchecked(n, why_not) for n in asked]
                continue
            if fix and found:
                found = _delete(rt, specs[asked[0]], found, leases[asked[0]], run_id, actor)
            strays += found
    return ReconcileReport(
        checked=len(names), strays=strays, unchecked=unchecked,
        orphans=orphans(rt.repo, Configured.of(rt.config)) if with_orphans else [])


def _account(rt: Runtime, group: list[TargetSpec],
             reporter: str) -> tuple[list[StrayKey], str | None]:
    """The stray keys of one account, or why it could not be checked."""
    reads: dict[str, TargetReads] = {
        spec.name: read_target(spec, rt.providers[spec.provider], rt.store, rt.repo)
        for spec in group}
    unknown = [f.detail for r in reads.values() for f in r.findings
               if f.kind in (FindingKind.COULD_NOT_CHECK, FindingKind.VAULT_SECRET_MISSING)]
    listing = next((r.keys for r in reads.values() if r.keys is not None), None)
    if any(r.in_use is None for r in reads.values()) or listing is None:
        return [], "; ".join(unknown) or "the provider's keys could not be listed"
    account = group[0].service_account
    accounted = {k for r in reads.values() for k in r.in_use or ()}
    accounted |= rt.repo.protected_key_ids(account, except_rotation="")
    accounted |= {c.key_id for c in rt.repo.all_pending_cleanups()
                  if c.service_account == account}
    in_flight = {key_name(r.target, r.rotation_id) for r in rt.repo.all_running()
                 if r.service_account == account}
    dead = [name for name, r in reads.items() if r.vault_key_dead]
    outcome, note = "found", None
    if dead:
        outcome = "kept"
        note = (f"not deleted: Vault's current key of {', '.join(dead)} does not "
                "authenticate (rotator verify: vault_key_dead); fix that first, consumers "
                "may be using a key from elsewhere meanwhile")
    keys = sorted((k for k in listing if k.key_id not in accounted and k.name not in in_flight),
                  key=lambda k: (k.created_at is None, k.created_at, k.key_id))
    return [StrayKey(reporter, account, k, outcome, note) for k in keys], None


def _delete(rt: Runtime, spec: TargetSpec, found: list[StrayKey], lease: Lease,
            run_id: str, actor: str) -> list[StrayKey]:
    ttl = rt.config.defaults.lease_ttl

    def confirm() -> None:
        if not rt.repo.confirm_lease(lease, ttl, rt.clock.now()):
            raise LeaseLost("lost the lease during reconcile --fix; another process took "
                            "over", target=lease.target, generation=lease.generation)

    deleter = StrayDeleter(rt.providers[spec.provider], rt.repo, rt.clock, lease, confirm,
                           run_id=run_id, service_account=spec.service_account, actor=actor)
    if rt.repo.has_open_intent(spec.name):
        deleter.close_interrupted(rt.repo.events(target=spec.name))
    done: list[StrayKey] = []
    for stray in found:
        if stray.outcome != "found":
            done.append(stray)
            continue
        key = stray.key
        why = (f"stray key {key.name!r} (created {key.created_at or 'unknown'}, last used "
               f"{key.last_used_at or 'never'}): not the key Vault serves, not in a grace "
               "window, not used by a running rotation and not queued for cleanup")
        try:
            auth = bearer(spec, rt.store)
            gone = deleter.delete(key, why, auth)
        except RotatorError as exc:
            done.append(StrayKey(stray.target, stray.service_account, key, "failed",
                                 f"{type(exc).__name__}: {exc}"))
            continue
        done.append(StrayKey(stray.target, stray.service_account, key,
                             "already_gone" if gone.already_gone else "deleted"))
    return done


@contextmanager
def _leases(rt: Runtime, group: list[TargetSpec], holder: str,
            take: bool) -> Iterator[dict[str, Lease] | str]:
    """The leases of every target of ``group`` (``take``), or who holds one of them."""
    taken: dict[str, Lease] = {}
    try:
        for spec in group if take else ():
            lease = rt.repo.acquire_lease(spec.name, holder, rt.config.defaults.lease_ttl,
                                          rt.clock.now())
            if lease is None:
                held = rt.repo.lease_of(spec.name)
                who = f" by {held[0]}" if held else ""
                yield (f"the lease of target {spec.name!r} is held{who}: a rotation of its "
                       "account may be mid-step; nothing deleted, run it again later")
                return
            taken[spec.name] = lease
        yield taken
    finally:
        for name in taken:
            rt.repo.release_lease(name, holder)
