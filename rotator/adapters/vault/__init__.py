"""Vault (or OpenBao) KV v2 over hvac: the ``SecretStore`` port.

    store.py   ``VaultStore``: read, check-and-set write with custom metadata, read back
    auth.py    token, AppRole and Kubernetes sessions, renewed and re-logged-in
    errors.py  hvac's and requests' exceptions turned into ours at the boundary
"""

from __future__ import annotations

from rotator.adapters.vault.store import VaultStore

__all__ = ["VaultStore"]
