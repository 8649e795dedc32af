"""The exception tree of rotator: every error the package raises on purpose.

    RotatorError
    ├── UsageError                 bad command line, unknown target (exit 2)
    ├── ConfigError                bad config file; names the key and the file (exit 2)
    ├── SchemaError                database schema missing or behind (run `rotator db upgrade`)
    ├── LeaseHeld                  another process is rotating this target
    │   └── LeaseLost              this process's lease was taken over: it must stop
    ├── RotationFinished           a write to a rotation that has already ended
    ├── TransientError             worth retrying; the *only* branch retries act on
    │   ├── ProviderUnavailable    5xx, timeouts, connection errors, 408, generic 409
    │   │   └── RateLimited        429; carries ``retry_after`` seconds
    │   └── VaultUnavailable       Vault sealed, unreachable or answering 5xx
    └── PermanentError             retrying will not help; the rotation rolls back
        ├── ProviderError          a 4xx the provider meant
        │   ├── Unauthorized       401/403: the key used does not authenticate
        │   ├── KeyNotFound        404 on a key
        │   └── KeyLimitReached    409 key_limit_reached
        ├── ProtocolError          a response that does not follow the contract
        ├── VaultError             Vault refused (permission denied, bad path)
        │   ├── SecretNotFound     no secret at the path (or that version is gone)
        │   └── CasConflict        check-and-set lost: someone else wrote the secret
        └── VerificationFailed     a new key never authenticated as expected

Every error carries ``context``: target, step, key id, request id, HTTP status; never key
material. Adapters translate third-party exceptions into these at the boundary, so a
traceback never shows an httpx request with its Authorization header.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "CasConflict",
    "ConfigError",
    "KeyLimitReached",
    "KeyNotFound",
    "LeaseHeld",
    "LeaseLost",
    "PermanentError",
    "ProtocolError",
    "ProviderError",
    "ProviderUnavailable",
    "RateLimited",
    "RotationFinished",
    "RotatorError",
    "SchemaError",
    "SecretNotFound",
    "TransientError",
    "Unauthorized",
    "UsageError",
    "VaultError",
    "VaultUnavailable",
    "VerificationFailed",
]


class RotatorError(Exception):
    """Root of the tree. ``context`` holds identifiers only, never secrets."""

    def __init__(self, message: str, **context: object) -> None:
        super().__init__(message)
        self.message = message
        self.context: dict[str, str] = {
            k: str(v) for k, v in context.items() if v is not None
        }

    def with_context(self, **context: object) -> RotatorError:
        """Add identifiers (target, step, ...) as the error travels outward."""
        for k, v in context.items():
            if v is not None:
                self.context.setdefault(k, str(v))
        return self

    def __str__(self) -> str:
        if not self.context:
            return self.message
        details = ", ".join(f"{k}={v}" for k, v in sorted(self.context.items()))
        return f"{self.message} ({details})"


class UsageError(RotatorError):
    """The command line asked for something that cannot be done (exit code 2)."""


class ConfigError(RotatorError):
    """The config file is invalid. ``problems`` lists every problem, each naming its key."""

    def __init__(self, message: str, problems: Mapping[str, str] | None = None,
                 **context: object) -> None:
        super().__init__(message, **context)
        self.problems: dict[str, str] = dict(problems or {})

    def __str__(self) -> str:
        head = super().__str__()
        if not self.problems:
            return head
        lines = [f"  {key}: {why}" for key, why in self.problems.items()]
        return "\n".join([head, *lines])


class SchemaError(RotatorError):
    """The database schema is missing or older than this code expects."""


class LeaseHeld(RotatorError):
    """Another live process holds the lease of this target."""


class LeaseLost(LeaseHeld):
    """A write or a side effect of a holder whose lease another process has taken since.

    The database refused the write (the lease generation it carried is no longer the
    target's), so nothing changed; the process must stop working on the target at once.
    """


class RotationFinished(RotatorError):
    """A finished rotation (completed, rolled back, failed) never changes again."""


class TransientError(RotatorError):
    """A failure that may go away: retried with backoff, within the step's budget."""


class ProviderUnavailable(TransientError):
    """The provider could not be reached, timed out, or answered 5xx/408/409."""


class RateLimited(ProviderUnavailable):
    """The provider answered 429. ``retry_after`` is in seconds, if the provider said."""

    def __init__(self, message: str, retry_after: float | None = None,
                 **context: object) -> None:
        super().__init__(message, **context)
        self.retry_after = retry_after


class VaultUnavailable(TransientError):
    """Vault could not be reached, is sealed, or answered 5xx."""


class PermanentError(RotatorError):
    """A failure that retrying will not fix."""


class ProviderError(PermanentError):
    """The provider rejected the request (a 4xx other than 408, 409 and 429)."""


class Unauthorized(ProviderError):
    """401/403: the key presented does not authenticate (or is not allowed)."""


class KeyNotFound(ProviderError):
    """404 on a key: it does not exist (any more)."""


class KeyLimitReached(ProviderError):
    """409 key_limit_reached: the service account holds as many keys as it may."""


class ProtocolError(PermanentError):
    """A response that does not follow the contract (bad JSON, missing field)."""


class VaultError(PermanentError):
    """Vault refused the request (permission denied, invalid path, ...)."""


class SecretNotFound(VaultError):
    """There is no secret (or no such version) at the path."""


class CasConflict(VaultError):
    """Check-and-set failed: the secret changed since it was read."""


class VerificationFailed(PermanentError):
    """A new key did not authenticate as the expected account and key id in time."""
