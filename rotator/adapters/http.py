"""The one place rotator's outbound HTTP clients are built: Count's httpx client and the
hvac client (with its requests session) that talks to Vault.

Every adapter takes its client from here, so a security default is set once for all of
them: TLS is verified (a CA bundle from the config replaces the system trust store
rather than adding to it), and the Count client never follows a redirect. No module
builds an HTTP client of its own.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

import httpx
import hvac
from hvac.adapters import Adapter

from rotator.core.errors import ConfigError

__all__ = ["count_client", "vault_client"]


def count_client(*, base_url: str, timeout: float, verify: bool | str,
                 headers: Mapping[str, str],
                 transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """An httpx client for a Count API; ``transport`` is for an adapter's unit tests."""
    tls: bool | ssl.SSLContext = verify if isinstance(verify, bool) else True
    if isinstance(verify, str) and transport is None:
        tls = _ca_bundle(verify, "Count")
    return httpx.Client(base_url=base_url, timeout=httpx.Timeout(timeout),
                        transport=transport, verify=tls, follow_redirects=False,
                        headers=dict(headers))


def vault_client(*, url: str, verify: bool | str, namespace: str | None, timeout: float,
                 adapter: type[Adapter[Any]]) -> hvac.Client:
    """An hvac client with no token: the caller's auth sets it (login or a token)."""
    # token="" rather than None: hvac would read VAULT_TOKEN or ~/.vault-token.
    return hvac.Client(
        url=url, token="", verify=verify, namespace=namespace, adapter=adapter,
        timeout=timeout,  # type: ignore[arg-type]  # requests takes a float; stub says int
    )


def _ca_bundle(path: str, service: str) -> ssl.SSLContext:
    problem = None
    try:
        return ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        problem = type(exc).__name__
    raise ConfigError(f"cannot load the CA bundle for {service}", key="verify", path=path,
                      error=problem)
