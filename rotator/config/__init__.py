"""Config: one TOML file parsed once into frozen, validated objects that are passed inward.

    model.py           the whole config and ``load_config``
    base.py            the frozen base model, durations, URL checks
    daemon.py          ``[daemon]``, ``[logging]`` and the schedule tables
    provider.py        ``CountPaths``: the Count API's path templates (``[providers.*.paths]``)
    retry.py           ``RetryPolicy``: attempts and delays (``[*.retry]``), used by the adapters
    locate.py          pydantic errors -> the config key, file and line they name
    secret_sources.py  a secret named by ``*_env`` or ``*_file``, read and checked
"""

from __future__ import annotations

from rotator.config.model import Config, load_config

__all__ = ["Config", "load_config"]
