"""``$VAULT_ADDR`` as ``[vault] url`` when the file has none, as Vault's own tools read it.

The file wins when it has both: what the config says is what is reviewed. Nothing else
of Vault's environment is read (an operator's own ``VAULT_TOKEN`` never stands in for the
config's token).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["VAULT_ADDR", "explain_vault_url", "with_vault_addr"]

VAULT_ADDR = "VAULT_ADDR"


def with_vault_addr(data: dict[str, Any], environ: Mapping[str, str]
                    ) -> tuple[dict[str, Any], bool]:
    """``data`` with ``vault.url`` from ``$VAULT_ADDR`` if the file has none; and whether
    it came from there."""
    vault = data.get("vault")
    address = environ.get(VAULT_ADDR, "").strip()
    if not isinstance(vault, dict) or "url" in vault or not address:
        return data, False
    return {**data, "vault": {**vault, "url": address}}, True


def explain_vault_url(problems: dict[str, str], from_env: bool) -> dict[str, str]:
    """``problems`` with ``vault.url``'s saying where the URL comes from, or may."""
    problem = problems.get("vault.url")
    if problem is None:
        return problems
    if from_env:
        problem = f"{problem} (the URL is ${VAULT_ADDR}'s: the config has no [vault] url)"
    elif problem.startswith("required key is missing"):
        problem = f"{problem}: write [vault] url, or set ${VAULT_ADDR}"
    return {**problems, "vault.url": problem}
