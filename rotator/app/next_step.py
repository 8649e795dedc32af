"""What an operator does next about a rotation refused before it changed anything.

A refusal at plan (no key at the Vault path, Vault refusing rotator's credentials, the
provider not answering) is kept in the audit and in ``status`` as a failed rotation; this
says, from the failure's code and the config, what to fix, with the command or the
setting involved. Never a secret: paths, URLs, variable names and key names only.
"""

from __future__ import annotations

from collections.abc import Callable

from rotator.config.model import Config, TargetConfig, VaultTokenAuth
from rotator.core.model import FailureCode, Rotation, Status

__all__ = ["refusal_next_step", "seed_command", "vault_credentials"]


def seed_command(target: TargetConfig) -> str:
    """The ``bao kv put`` that seeds a target's path with its current key, from a file
    (so the key stays out of the shell's history)."""
    return (f"bao kv put -mount={target.vault_mount} {target.vault_path} "
            f"{target.vault_field}=@CURRENT_KEY_FILE")


def vault_credentials(config: Config) -> str:
    """Where rotator's Vault credentials come from, in the config's words."""
    auth = config.vault.auth
    if isinstance(auth, VaultTokenAuth):
        source = (f"${auth.token_env}" if auth.token_env else str(auth.token_file))
        return f"the token of [vault.auth] ({source})"
    return f"the {auth.method} login of [vault.auth]"


def refusal_next_step(config: Config, rot: Rotation) -> str | None:
    """What to do about ``rot`` if it was refused at plan for a reason an operator fixes;
    ``None`` for any other rotation (or a target no longer configured)."""
    failure, target = rot.failure, config.targets.get(rot.target)
    if rot.status is not Status.FAILED or failure is None or target is None:
        return None
    what = _ADVICE.get(failure.code)
    return None if what is None else f"nothing was changed; {what(config, target)}"


def _where(target: TargetConfig) -> str:
    return f"{target.vault_mount}/{target.vault_path}"


_ADVICE: dict[FailureCode, Callable[[Config, TargetConfig], str]] = {
    FailureCode.NO_CURRENT_KEY: lambda _config, target: (
        f"seed {_where(target)} with the target's current key ({seed_command(target)}), "
        "then rotate again"),
    FailureCode.VAULT_REFUSED: lambda config, target: (
        f"check {vault_credentials(config)}: it must be valid and its policy must read and "
        f"write {_where(target)}"),
    FailureCode.VAULT_UNREADABLE: lambda config, _target: (
        f"check that Vault at {config.vault.url} ([vault] url) is reachable and unsealed, "
        "then rotate again"),
    FailureCode.CURRENT_KEY_UNPROBED: lambda config, target: (
        f"the provider was tried at {config.providers[target.provider].base_url} "
        f"([providers.{target.provider}] base_url): check that it is reachable and "
        "answering, then rotate again"),
    FailureCode.CURRENT_KEY_REJECTED: lambda _config, target: (
        f"the key at {_where(target)} does not authenticate: put the target's live key "
        f"there ({seed_command(target)})"),
}
