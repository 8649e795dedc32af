"""Secrets named by the config: read from an environment variable or a file, never TOML."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from rotator.core.errors import ConfigError
from rotator.core.secret import Secret

__all__ = ["resolve_secret"]


def resolve_secret(key: str, env: str | None, file: Path | None,
                   environ: Mapping[str, str] | None = None) -> Secret:
    """The secret that config key ``key`` points at (``key`` names it in errors)."""
    environ = os.environ if environ is None else environ
    if env:
        value = environ.get(env, "").strip()
        if not value:
            raise ConfigError(f"{key}_env names environment variable {env}, which is not set",
                              key=f"{key}_env")
        return Secret(value)
    if file:
        try:
            value = file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{key}_file: cannot read {file}: {exc.strerror}",
                              key=f"{key}_file") from None
        except UnicodeDecodeError:
            # The message quotes none of the bytes: they may be the secret.
            raise ConfigError(f"{key}_file: {file} is not UTF-8 text",
                              key=f"{key}_file") from None
        if not value:
            raise ConfigError(f"{key}_file: {file} is empty", key=f"{key}_file")
        return Secret(value)
    raise ConfigError(f"no source for {key}: set {key}_env or {key}_file", key=key)
