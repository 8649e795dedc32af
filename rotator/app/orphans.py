"""Work SQL holds for targets no longer in the config: running rotations, queued deletions.

``status``, ``verify`` and ``reconcile`` report them. None of it can be finished without
the target back in the config: a rotation row keeps its target and service account, but
neither the provider nor the Vault mount, path and field it rotates, and a queued
deletion keeps its key and account, but not the provider whose management key deletes it.
Guessing them could write a key to the wrong Vault path, so each is reported with what to
do instead.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from rotator.core.model import Rotation
from rotator.core.ports import PendingCleanup, RotationReader

__all__ = ["Orphan", "orphans"]


@dataclass(frozen=True, slots=True)
class Orphan:
    target: str
    rotation: Rotation | None = None        # a running rotation of the target
    cleanup: PendingCleanup | None = None   # or a key queued for deletion

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
        back = (f"put [targets.{self.target}] back (same service_account, vault_mount and "
                "vault_path)")
        if self.rotation is not None:
            rot = self.rotation
            return (f"{gone}: its rotation, at step {rot.step.value} (service account "
                    f"{rot.service_account}), cannot be finished, since SQL keeps neither "
                    f"its provider nor its Vault path: {back}, then `rotator run --once` "
                    f"finishes it (or `rotator cancel {self.target}` rolls it back)")
        assert self.cleanup is not None
        return (f"{gone}: key {self.cleanup.key_id} of service account "
                f"{self.cleanup.service_account} is queued for deletion, but SQL keeps no "
                f"provider to delete it with: {back} and the queue deletes it on the next "
                "run, or delete it at the provider by hand")


def orphans(reader: RotationReader, configured: Collection[str]) -> list[Orphan]:
    """Running rotations, then queued deletions, of targets not in ``configured``."""
    found = [Orphan(r.target, rotation=r) for r in reader.all_running()
             if r.target not in configured]
    found += [Orphan(c.target, cleanup=c) for c in reader.all_pending_cleanups()
              if c.target not in configured]
    return found
