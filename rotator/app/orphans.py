"""Work SQL holds for targets no longer in the config: running rotations, queued deletions.

``status``, ``verify`` and ``reconcile`` report them, and say which the next run finishes.
Since revision 0009 a rotation row keeps the provider and the Vault mount, path and field
it started with, and a queued deletion the provider whose management key deletes it, so
the daemon's sweep (``run``, ``run --once``) finishes such work through the runner, as it
began: the same resume, lease and audit trail as a configured target's, with a
``TargetSpec`` built from the row (``runtime.orphan_spec``). It is never rotated again. A
rotation still before its store (Vault untouched) is rolled back rather than resumed, as
``rotator cancel`` would: nothing configured wants a new key for that path any more. From
the store on, consumers may read its new key, so it goes forward to its end.

Some work stays report-only, each with what to do instead (``Orphan.blocked``):

* rows from before revision 0009, which keep neither provider nor Vault ref;
* work whose provider is no longer configured (the row's provider, never another one);
* a rotation whose Vault path is now a configured target's, above all the one holding
  its provider's own management key (``management_key_target``): finishing it would
  write, restore or delete under that target, whose own rotations move that path;
* a target whose rows disagree (two providers or paths): no one spec is right for all.

Every check is on what the rows say, never a guess: a key is only ever written to the
Vault path its rotation started with (the runner refuses any other: ``TargetSpec.
not_started_with``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rotator.config.model import Config
from rotator.core.machine import BEFORE_STORE
from rotator.core.model import Rotation, SecretRef
from rotator.core.ports import PendingCleanup, RotationReader

__all__ = ["Configured", "Orphan", "orphans"]


@dataclass(frozen=True, slots=True)
class Configured:
    """What of the config decides an orphan's fate."""

    targets: Mapping[str, SecretRef]        # each configured target's Vault ref
    # Each configured provider, and the target holding its management key (if one does).
    providers: Mapping[str, str | None]

    @classmethod
    def of(cls, config: Config) -> Configured:
        return cls({name: SecretRef(t.vault_mount, t.vault_path, t.vault_field)
                    for name, t in config.targets.items()},
                   {name: p.management_key_target for name, p in config.providers.items()})


@dataclass(frozen=True, slots=True)
class Orphan:
    target: str
    rotation: Rotation | None = None        # a running rotation of the target
    cleanup: PendingCleanup | None = None   # or a key queued for deletion
    # Why the next run cannot finish it (None: it does); the same for all of a target's
    # work, which one runner pass does together.
    blocked: str | None = None
    # The rotation row the target's work is finished as (its provider and Vault ref).
    source: Rotation | None = None

    @property
    def finishable(self) -> bool:
        return self.blocked is None and self.source is not None

    @property
    def rotation_id(self) -> str | None:
        if self.rotation is not None:
            return self.rotation.rotation_id
        return None if self.cleanup is None else self.cleanup.rotation_id

    @property
    def key_id(self) -> str | None:
        return None if self.cleanup is None else self.cleanup.key_id

    @property
    def detail(self) -> str:
        gone = f"target {self.target!r} is no longer in the config"
        if self.finishable:
            return f"{gone}: {self._finished_how()}"
        # A blocked reason that names its own remedy (a rename back) is told whole.
        own_remedy = self.blocked is not None and "rename [targets." in self.blocked
        back = (f"put [targets.{self.target}] back (same provider, service_account, "
                "vault_mount, vault_path and vault_field)")
        if self.rotation is not None:
            rot = self.rotation
            what = (f"{gone}: its rotation, at step {rot.step.value} (service account "
                    f"{rot.service_account}), cannot be finished: {self.blocked}")
            return what if own_remedy else (
                f"{what}: {back}, then `rotator run --once` finishes it (or `rotator cancel "
                f"{self.target}` rolls it back)")
        assert self.cleanup is not None
        what = (f"{gone}: key {self.cleanup.key_id} of service account "
                f"{self.cleanup.service_account} is queued for deletion, but cannot be "
                f"deleted: {self.blocked}")
        return what if own_remedy else (
            f"{what}: {back} and the queue deletes it on the next run, or delete it at the "
            "provider by hand")

    def _finished_how(self) -> str:
        source = self.source
        assert source is not None and source.vault_ref is not None
        ref = source.vault_ref
        if self.rotation is not None and self.rotation.step in BEFORE_STORE:
            return (f"its rotation, at step {self.rotation.step.value} (service account "
                    f"{self.rotation.service_account}), is rolled back by the next `rotator "
                    f"run --once` (or sweep of the daemon) with provider {source.provider}: "
                    f"its new key is deleted, and Vault {ref.mount}/{ref.path}, never "
                    "written by it, stays as it is")
        if self.rotation is not None:
            return (f"its rotation, at step {self.rotation.step.value} (service account "
                    f"{self.rotation.service_account}), is finished by the next `rotator "
                    f"run --once` (or sweep of the daemon) as it started: provider "
                    f"{source.provider}, Vault {ref.mount}/{ref.path} (field {ref.field}); "
                    "the target is not rotated again")
        assert self.cleanup is not None
        return (f"key {self.cleanup.key_id} of service account "
                f"{self.cleanup.service_account} is queued for deletion, and the next "
                f"`rotator run --once` (or sweep of the daemon) deletes it with provider "
                f"{source.provider}")


def orphans(reader: RotationReader, configured: Configured) -> list[Orphan]:
    """Running rotations, then queued deletions, of targets not configured, each with
    whether the next run finishes it."""
    running = {r.target: r for r in reader.all_running() if r.target not in configured.targets}
    queued: dict[str, list[PendingCleanup]] = {}
    for item in reader.all_pending_cleanups():
        if item.target not in configured.targets:
            queued.setdefault(item.target, []).append(item)
    fate = {target: _fate(reader, configured, running.get(target), queued.get(target, []))
            for target in running.keys() | queued.keys()}
    _block_shared_paths(fate)
    found = [Orphan(target, rotation=rot, source=fate[target][0], blocked=fate[target][1])
             for target, rot in running.items()]
    found += [Orphan(target, cleanup=item, source=fate[target][0], blocked=fate[target][1])
              for target, items in queued.items() for item in items]
    return found


def _fate(reader: RotationReader, configured: Configured, running: Rotation | None,
          queued: Sequence[PendingCleanup]) -> tuple[Rotation | None, str | None]:
    """The rotation row a target's orphaned work is finished as, and why it cannot be
    (None: it can)."""
    rows = _rows(reader, running, queued)
    if isinstance(rows, str):
        return None, rows
    why = _why_not(rows, configured)
    return (rows[0], None) if why is None else (None, why)


def _rows(reader: RotationReader, running: Rotation | None,
          queued: Sequence[PendingCleanup]) -> list[Rotation] | str:
    """The rotation rows a target's work belongs to (the running one first), or why the
    queued deletions cannot be matched with theirs."""
    rows = [] if running is None else [running]
    known = {r.rotation_id: r for r in reader.rotations(queued[0].target)} if queued else {}
    for item in queued:
        row = known.get(item.rotation_id)
        if row is None:
            return f"its rotation {item.rotation_id} is not in SQL"
        if item.provider is None:
            return ("it was queued before revision 0009, and SQL keeps no provider to "
                    "delete it with")
        if item.provider != row.provider:
            return (f"key {item.key_id} was queued for provider {item.provider!r}, but its "
                    f"rotation names {row.provider!r}")
        rows.append(row)
    return rows


def _why_not(rows: Sequence[Rotation], configured: Configured) -> str | None:
    """Why work started as ``rows`` say cannot be finished under ``configured``."""
    source = rows[0]
    if any(r.provider is None or r.vault_ref is None for r in rows):
        return ("it started before revision 0009, and SQL keeps neither its provider nor "
                "its Vault path")
    if len({(r.provider, r.vault_ref, r.service_account) for r in rows}) > 1:
        return ("its rotations name different providers, Vault paths or service accounts, "
                "and one pass finishes all of a target's work")
    assert source.provider is not None and source.vault_ref is not None
    if source.provider not in configured.providers:
        return f"its provider {source.provider!r} is no longer in the config"
    # By mount and path, whatever the field: KV v2 keeps one version history and one
    # custom metadata (whose rotation wrote it) per path.
    here = _path(source.vault_ref)
    holder = next((name for name, ref in configured.targets.items() if _path(ref) == here),
                  None)
    if holder is not None and holder == configured.providers[source.provider]:
        return (f"its Vault path holds provider {source.provider}'s own management key "
                f"(target {holder}), which only that target's rotations move")
    if holder is not None:
        return (f"its Vault path is now that of configured target {holder!r}, whose "
                f"rotations move it: rename [targets.{holder}] back to "
                f"[targets.{source.target}] until this work is done, or `rotator cancel "
                f"{source.target}` from such a config")
    return None


def _path(ref: SecretRef) -> tuple[str, str]:
    return ref.mount, ref.path


def _block_shared_paths(fate: dict[str, tuple[Rotation | None, str | None]]) -> None:
    """Two targets out of the config whose work would write one Vault path (a target
    renamed twice, say) each have a lease of their own: neither is finished."""
    by_path: dict[tuple[str, str], list[str]] = {}
    for target, (source, _) in fate.items():
        if source is not None and source.vault_ref is not None:
            by_path.setdefault(_path(source.vault_ref), []).append(target)
    for targets in by_path.values():
        for target in targets if len(targets) > 1 else ():
            others = ", ".join(repr(t) for t in sorted(targets) if t != target)
            fate[target] = (None, f"its Vault path is also that of {others}, no longer in "
                                  "the config either, and one path takes one rotation at a "
                                  "time")
