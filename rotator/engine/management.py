"""Management keys that live in Vault: a provider whose key is one of its own targets.

With ``management_key_target`` (self-rotation) the key rotator manages a provider with is
the current secret of one target's Vault path. It is read when first needed and kept,
and dropped when this process writes that path (the store of a rotation of that target,
or a rollback's restore), so the next call reads the key just stored: rotator switches
to the new key right after the store, while the old one still works for the grace
window. A process that did not make the write (another replica, a CLI run) reads it
again once its copy is ``MAX_AGE`` old, or at once when the provider refuses its copy
(``refused``): with a grace window shorter than that, the other process's rotation may
have deleted the key this one still holds.
Nothing of it is persisted: after a restart the key is read from Vault again.
"""

from __future__ import annotations

import threading

from rotator.core.ports import Clock, SecretRef, SecretStore
from rotator.core.secret import Secret
from rotator.core.target import TargetSpec

__all__ = ["MAX_AGE", "ManagementKeys", "bearer"]

# Seconds a copy read from Vault is used before it is read again.
MAX_AGE = 30.0


class ManagementKeys:
    def __init__(self, store: SecretStore, clock: Clock, max_age: float = MAX_AGE) -> None:
        self._store = store
        self._clock = clock
        self._max_age = max_age
        self._lock = threading.Lock()   # the daemon's workers share one runner
        self._cached: dict[SecretRef, tuple[Secret, float]] = {}

    def key(self, ref: SecretRef) -> Secret:
        """The current secret at ``ref``: the copy read earlier, or Vault's (``RotatorError``
        if Vault cannot be read)."""
        now = self._clock.now().timestamp()
        with self._lock:
            held = self._cached.get(ref)
        if held is not None and now - held[1] < self._max_age:
            return held[0]
        secret = self._store.read_current(ref).secret
        with self._lock:
            self._cached[ref] = (secret, now)
        return secret

    def refused(self, ref: SecretRef, key: Secret) -> Secret | None:
        """The provider refused ``key``, read from ``ref``: another process may have rotated
        it since, and deleted it after its grace. Vault's current secret if that is another
        key, to try once more; None if Vault still holds ``key`` (the refusal stands)."""
        with self._lock:
            held = self._cached.get(ref)
            if held is not None and held[0] == key:
                del self._cached[ref]
        fresh = self.key(ref)
        return None if fresh == key else fresh

    def written(self, ref: SecretRef) -> None:
        """This process changed the secret at ``ref``: the next ``key`` reads it again."""
        with self._lock:
            self._cached.pop(ref, None)


def bearer(spec: TargetSpec, store: SecretStore, keys: ManagementKeys | None = None) -> Secret:
    """The key that manages ``spec``'s account keys: the admin key given, the one at the
    Vault path of the target it belongs to (self-rotation; ``keys``' copy when given), or
    (self mode) the account's own current key in Vault."""
    if spec.management_key is not None:
        return spec.management_key
    if spec.management_key_ref is not None:
        if keys is not None:
            return keys.key(spec.management_key_ref)
        return store.read_current(spec.management_key_ref).secret
    return store.read_current(spec.ref).secret
