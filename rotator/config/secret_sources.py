"""Secrets named by the config: exactly one source each, an environment variable or a file.

One rule for every secret the config names (the Vault token, the AppRole secret id, each
provider's management key): a model that holds one lists it in ``secret_sources`` and
``check_sources`` (run by ``Frozen`` after validation) demands exactly one of
``<name>_env`` and ``<name>_file``. There is no implicit default variable: a config that
names neither, or both, is a config error naming the key. ``resolve_secret`` reads the one
source when the secret is needed. No message quotes a value: a ``*_env`` that holds a key
pasted by mistake must not end up in a terminal or a CI log.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rotator.config.locate import FieldProblem
from rotator.core.errors import ConfigError
from rotator.core.secret import Secret
from rotator.redaction import looks_like_secret

__all__ = ["check_env_name", "check_sources", "resolve_secret", "secret_names"]

# What a shell, systemd and Kubernetes accept as a variable name.
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


# A long run of letters and digits with no '_': random key material, not a variable name.
_KEY_MATERIAL = re.compile(r"(?=[A-Za-z0-9]*[0-9])(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{24,}")


def check_env_name(value: str) -> str:
    """``value`` if it can be the name of an environment variable; the message quotes none of it."""
    if looks_like_secret(value) or _KEY_MATERIAL.fullmatch(value):
        raise ValueError("looks like a secret, not the name of an environment variable: "
                         "put the secret in the variable and name the variable here")
    if not _ENV_NAME.fullmatch(value):
        raise ValueError("not the name of an environment variable "
                         "(letters, digits and '_', not starting with a digit)")
    return value


def secret_names(fields: Iterable[str]) -> tuple[str, ...]:
    """The secrets a model names: each ``<name>`` with both a ``_env`` and a ``_file`` key."""
    keys = set(fields)
    return tuple(sorted(key.removesuffix("_env") for key in keys
                        if key.endswith("_env") and f"{key.removesuffix('_env')}_file" in keys))


def check_sources(model: Any, names: tuple[str, ...], *, required: bool = True) -> None:
    """Exactly one of ``<name>_env`` / ``<name>_file`` per name (none at all if not required)."""
    for name in names:
        given = [f"{name}{suffix}" for suffix in ("_env", "_file")
                 if getattr(model, f"{name}{suffix}") not in (None, "")]
        pair = f"{name}_env/{name}_file"
        if required and len(given) == 2:
            raise FieldProblem(pair, f"names both {given[0]} and {given[1]}: name exactly one "
                                     "source for the secret")
        if required and not given:
            raise FieldProblem(pair, f"name exactly one source for the secret: {name}_env "
                                     f"(an environment variable) or {name}_file (a file)")


def resolve_secret(key: str, env: str | None, file: Path | None,
                   environ: Mapping[str, str] | None = None) -> Secret:
    """The secret that config key ``key`` points at (``key`` names it in errors).

    The config was validated, so exactly one of ``env`` and ``file`` is set.
    """
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
