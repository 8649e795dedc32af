"""The emulator's in-memory model of Count: service accounts, API keys, counters.

``EmulatorState`` is thread-safe (one lock; records are frozen and replaced). It owns
the rules the contract states: the key limit, name validation, delete-once, who may
manage whose keys (admin and self modes), and authentication with propagation delay.
It keeps counters for tests (creates and deletes per account, requests, faults by
kind) and the history of every secret it ever issued, so that secret-hygiene tests
can grep logs for them. Refusals are ``ApiError``s carrying the contract's codes.
"""

from __future__ import annotations

import random
import secrets
import string
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from rotator.emulator.envelope import ApiError

__all__ = [
    "MAX_NAME_LENGTH",
    "ApiKey",
    "Counters",
    "EmulatorState",
    "Role",
    "ServiceAccount",
    "rfc3339",
]

Role = Literal["admin", "member"]
ROLES: tuple[Role, ...] = ("admin", "member")
MAX_NAME_LENGTH = 100
_BASE62 = string.digits + string.ascii_letters
_SECRET_LENGTH = 40


def rfc3339(ts: float | None) -> str | None:
    """Epoch seconds as an RFC 3339 UTC timestamp (``...Z``), None stays None."""
    if ts is None:
        return None
    moment = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    id: str
    name: str
    role: Role


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    account_id: str
    name: str
    secret: str = field(repr=False)
    created_at: float
    propagated_at: float                 # authenticates from this moment on
    last_used_at: float | None = None
    deleted_at: float | None = None

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    def listing(self) -> dict[str, Any]:
        """The contract's key listing entry: never the secret."""
        return {
            "key_id": self.key_id,
            "name": self.name,
            "created_at": rfc3339(self.created_at),
            "last_used_at": rfc3339(self.last_used_at),
        }


@dataclass(frozen=True, slots=True)
class Counters:
    """A snapshot of the counters."""

    requests: int
    creates: Mapping[str, int]  # account id -> keys created through the API
    deletes: Mapping[str, int]  # account id -> keys deleted through the API
    faults: Mapping[str, int]   # FaultKind value -> times injected

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "creates": dict(self.creates),
                "deletes": dict(self.deletes), "faults": dict(self.faults)}


class _Unpredictable:
    """``random.Random``'s two methods used here, from the OS's CSPRNG."""

    @staticmethod
    def choice(alphabet: str) -> str:
        return secrets.choice(alphabet)

    @staticmethod
    def randbytes(n: int) -> bytes:
        return secrets.token_bytes(n)


class EmulatorState:
    """Accounts and keys, guarded by one lock. ``clock`` gives epoch seconds."""

    def __init__(self, clock: Callable[[], float] = time.time,
                 identity_seed: int | None = None) -> None:
        self._clock = clock
        # Account ids, key ids and secrets: unpredictable, or the same sequence for the same
        # seed (a restarted emulator issues what its last start issued, in the same order,
        # so the accounts seeded at start match a config and Vault written before).
        self._identity = (_Unpredictable() if identity_seed is None
                          else random.Random(f"rotator-emulator:{identity_seed}"))  # noqa: S311
        self._lock = threading.RLock()
        self._accounts: dict[str, ServiceAccount] = {}
        self._keys: dict[str, ApiKey] = {}      # key id -> key, deleted ones included
        self._by_secret: dict[str, str] = {}    # secret -> key id
        self._issued: list[str] = []
        self._requests = 0
        self._creates: Counter[str] = Counter()
        self._deletes: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()

    # --- accounts ---------------------------------------------------------------------

    def add_account(self, name: str, role: str = "member") -> tuple[ServiceAccount, ApiKey]:
        """Seed a service account with one key, usable at once (not counted as a create)."""
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
            raise ValueError(f"account name must be 1 to {MAX_NAME_LENGTH} characters")
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        with self._lock:   # the identity sequence is drawn from under the lock only
            account = ServiceAccount("sa_" + self._hex(8), name,
                                     "admin" if role == "admin" else "member")
            self._accounts[account.id] = account
            key = self._issue(account.id, "initial", propagation_delay=0.0)
        return account, key

    def accounts(self) -> list[ServiceAccount]:
        with self._lock:
            return list(self._accounts.values())

    def account(self, account_id: str) -> ServiceAccount:
        """The account; ApiError 404 not_found when there is none."""
        with self._lock:
            account = self._accounts.get(account_id)
        if account is None:
            raise ApiError(404, "not_found", "no such service account")
        return account

    def visible_accounts(self, caller: ApiKey) -> list[ServiceAccount]:
        """What ``caller`` may list: every account for an admin, else its own."""
        mine = self.account(caller.account_id)
        return self.accounts() if mine.role == "admin" else [mine]

    def authorize(self, caller: ApiKey, account_id: str) -> ServiceAccount:
        """May ``caller`` manage the keys of ``account_id``? 404 / 403 if not.

        Admin mode: a key of an admin account manages any account's keys.
        Self mode: an account's own key manages that account's keys.
        """
        target = self.account(account_id)
        if caller.account_id == account_id:
            return target
        if self.account(caller.account_id).role == "admin":
            return target
        raise ApiError(403, "forbidden", "this key may not manage that service account")

    # --- keys -------------------------------------------------------------------------

    def keys(self, account_id: str, *, include_deleted: bool = False) -> list[ApiKey]:
        """The account's keys, oldest first; deleted ones only on request."""
        with self._lock:
            return [k for k in self._keys.values()
                    if k.account_id == account_id and (include_deleted or not k.deleted)]

    def create_key(self, account_id: str, name: object, *, key_limit: int = 2,
                   propagation_delay: float = 0.0) -> ApiKey:
        """Create a key; 400 invalid_request for a bad name, 409 key_limit_reached."""
        if not isinstance(name, str) or not name:
            raise ApiError(400, "invalid_request", "name is required and must be a string")
        if len(name) > MAX_NAME_LENGTH:
            raise ApiError(400, "invalid_request",
                           f"name must be at most {MAX_NAME_LENGTH} characters")
        with self._lock:
            self.account(account_id)
            if len(self.keys(account_id)) >= key_limit:
                raise ApiError(409, "key_limit_reached",
                               f"the service account already holds {key_limit} keys")
            key = self._issue(account_id, name, propagation_delay=propagation_delay)
            self._creates[account_id] += 1
        return key

    def delete_key(self, account_id: str, key_id: str) -> ApiKey:
        """Delete (revoke) a key for good; 404 key_not_found if unknown or already gone."""
        with self._lock:
            key = self._keys.get(key_id)
            if key is None or key.account_id != account_id or key.deleted:
                raise ApiError(404, "key_not_found", "no such key")
            key = replace(key, deleted_at=self._clock())
            self._keys[key_id] = key
            self._deletes[account_id] += 1
        return key

    def authenticate(self, bearer: str | None, *,
                     revoke_delay: float = 0.0) -> ApiKey | None:
        """The live, propagated key with this secret (its use is recorded), else None.

        ``revoke_delay``: a deleted key still authenticates for this long after its
        deletion (a provider slow to revoke, or one that does not).
        """
        if not bearer:
            return None
        with self._lock:
            key_id = self._by_secret.get(bearer)
            key = self._keys.get(key_id) if key_id is not None else None
            now = self._clock()
            if key is None or now < key.propagated_at:
                return None
            if key.deleted_at is not None and now >= key.deleted_at + revoke_delay:
                return None
            key = replace(key, last_used_at=now)
            self._keys[key.key_id] = key
        return key

    def issued_secrets(self) -> list[str]:
        """Every secret ever issued, in order (for tests that grep logs for leaks)."""
        with self._lock:
            return list(self._issued)

    def _issue(self, account_id: str, name: str, *, propagation_delay: float) -> ApiKey:
        now = self._clock()
        secret = "cnt_" + "".join(self._identity.choice(_BASE62) for _ in range(_SECRET_LENGTH))
        key = ApiKey("key_" + self._hex(8), account_id, name, secret,
                     created_at=now, propagated_at=now + propagation_delay)
        self._keys[key.key_id] = key
        self._by_secret[secret] = key.key_id
        self._issued.append(secret)
        return key

    def _hex(self, nbytes: int) -> str:
        return self._identity.randbytes(nbytes).hex()

    # --- counters ---------------------------------------------------------------------

    def record_request(self) -> None:
        with self._lock:
            self._requests += 1

    def record_fault(self, kind: str) -> None:
        with self._lock:
            self._faults[kind] += 1

    def counters(self) -> Counters:
        with self._lock:
            return Counters(self._requests, dict(self._creates), dict(self._deletes),
                            dict(self._faults))

    def snapshot(self) -> dict[str, Any]:
        """Accounts, their keys (ids, names, times; never secrets) and the counters."""
        with self._lock:
            accounts = [
                {
                    "id": account.id,
                    "name": account.name,
                    "role": account.role,
                    "keys": [
                        {
                            **key.listing(),
                            "deleted_at": rfc3339(key.deleted_at),
                            "propagated_at": rfc3339(key.propagated_at),
                        }
                        for key in self.keys(account.id, include_deleted=True)
                    ],
                }
                for account in self._accounts.values()
            ]
            return {"accounts": accounts, "counters": self.counters().as_dict()}
