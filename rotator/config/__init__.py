"""Config: one TOML file parsed once into frozen, validated objects that are passed inward.

    model.py           the whole config and ``load_config``
    base.py            the frozen base model, durations, URL checks
    daemon.py          ``[daemon]``, ``[logging]`` and the schedule tables
    provider.py        ``ProviderConnection`` (every provider table's keys) and ``CountPaths``,
                       the Count API's path templates (``[providers.*.paths]``)
    http_provider.py   ``HttpProviderConfig``: a ``type = "http"`` provider's calls
    json_pointer.py    RFC 6901 pointers, parsed and resolved (pure)
    retry.py           ``RetryPolicy``: attempts and delays (``[*.retry]``), used by the adapters
    locate.py          pydantic errors -> the config key, file and line they name
    secret_sources.py  a secret named by ``*_env`` or ``*_file``, read and checked
"""

from __future__ import annotations

from rotator.config.model import Config, load_config

__all__ = ["Config", "load_config"]
