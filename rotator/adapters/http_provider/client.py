"""``HttpProvider``: the ``KeyProvider`` port for a ``type = "http"`` provider.

Each call is the config's: its method, its path and body templates filled in (a path's
values percent-encoded as one segment each; a body's as whole JSON strings, never spliced
into JSON text), the key in the configured header, and its answer read through the
config's pointers. Sending, retries, rate-limit pacing and the status table are
``rotator.adapters.keyapi``'s, the same as Count's:

    the call's ``status``              the parsed value (a pointer that finds nothing or
                                       the wrong type: ProtocolError naming the pointer)
    delete's ``gone_status`` (+ code)  done before: success, ``already_gone``
    another 2xx                        ProtocolError (not the status the config expects)
    anything else                      the shared table (``keyapi.wire.failure``); 409
                                       with ``key_limit_code`` is KeyLimitReached

Errors carry identifiers only, plus the provider's error message where it is plain text
(``reading.plain_detail``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from string import Formatter
from typing import TypeVar

import httpx

from rotator.adapters.clock import SYSTEM_CLOCK
from rotator.adapters.http import MAX_BODY_BYTES
from rotator.adapters.http_provider.reading import PointerFields, plain_detail, reading
from rotator.adapters.keyapi.session import (
    CallRecord,
    KeyApiSession,
    RateLimitNames,
    SessionOwner,
)
from rotator.adapters.keyapi.wire import Answer, Call, Fields, failure, path_segment
from rotator.config.http_provider import (
    CreateCall,
    DeleteCall,
    HttpProviderConfig,
    ListCall,
    ProbeCall,
)
from rotator.core.errors import ProtocolError, RotatorError
from rotator.core.model import KeyRecord
from rotator.core.ports import Deletion, Identity, KeyListing, NewKey
from rotator.core.secret import Secret
from rotator.redaction import forget_key, remember_secret

__all__ = ["HttpProvider"]

T = TypeVar("T")
Spec = ListCall | CreateCall | DeleteCall | ProbeCall   # one of the config's call tables


def _fill(template: str, values: dict[str, str]) -> str:
    # Formatter.vformat: the config allowed only these names, and a value's own braces
    # are never read as placeholders.
    return Formatter().vformat(template, (), values)


def _body(template: object, values: dict[str, str]) -> object:
    if isinstance(template, str):
        return _fill(template, values)
    if isinstance(template, dict):
        return {_fill(k, values): _body(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [_body(item, values) for item in template]
    return template


class HttpProvider(SessionOwner):
    """``KeyProvider`` for the provider ``name`` of the config. Thread-safe; close it."""

    def __init__(
        self, name: str, config: HttpProviderConfig, *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = SYSTEM_CLOCK.now,
        monotonic: Callable[[], float] = time.monotonic,
        on_call: Callable[[CallRecord], None] | None = None,
        user_agent: str = "rotator/0.1",
    ) -> None:
        self._config = c = config
        header, form = c.auth_header, c.auth_format
        limits = c.rate_limit
        self._session = KeyApiSession(
            name, c.base_url, reading=reading(c), timeout=c.timeout, retry=c.retry,
            auth_headers=lambda token: {header: form.format(key=token)},
            rate_limit=RateLimitNames(limits.remaining, limits.reset, limits.limit),
            transport=transport,
            verify=str(c.ca_bundle) if c.ca_bundle else True, sleep=sleep, now=now,
            monotonic=monotonic, on_call=on_call, user_agent=user_agent, proxy=c.proxy)

    # --- the calls ----------------------------------------------------------------------

    def list_keys(self, account: str, auth: Secret) -> KeyListing:
        spec = self._config.list_keys

        def parse(doc: Fields, rid: str | None) -> KeyListing:
            return KeyListing(keys=tuple(
                KeyRecord(item.text(spec.key_id), item.text(spec.name, allow_empty=True),
                          item.time(spec.created_at),
                          None if spec.last_used_at is None
                          else item.time(spec.last_used_at, nullable=True))
                for item in doc.objects(spec.items)), request_id=rid)
        return self._call("list_keys", spec, {"service_account": account}, auth, parse)

    def create_key(self, account: str, name: str, auth: Secret) -> NewKey:
        spec = self._config.create_key

        def parse(doc: Fields, rid: str | None) -> NewKey:
            secret = Secret(doc.text(spec.secret))
            key_id = doc.text(spec.key_id)
            # Masked in every log line from the moment it exists, until delete_key says it
            # is gone.
            remember_secret(secret, key_id=key_id)
            if rid is not None and secret.reveal() in rid:
                rid = None  # a server that echoes the new key as the request id: not an id
            return NewKey(
                key_id=key_id, secret=secret,
                name=name if spec.name is None else doc.text(spec.name, allow_empty=True),
                created_at=None if spec.created_at is None else doc.time(spec.created_at),
                request_id=rid)
        return self._call("create_key", spec, {"service_account": account, "name": name},
                          auth, parse)

    def delete_key(self, account: str, key_id: str, auth: Secret) -> Deletion:
        def parse(doc: Fields, rid: str | None) -> Deletion:
            forget_key(key_id)  # revoked: a dead key needs no masking (redaction's bound)
            return Deletion(key_id=key_id, already_gone=doc.gone, request_id=rid)
        return self._call("delete_key", self._config.delete_key,
                          {"service_account": account, "key_id": key_id}, auth, parse)

    def whoami(self, key: Secret) -> Identity:
        spec = self._config.probe

        def parse(doc: Fields, rid: str | None) -> Identity:
            key_id = doc.text(spec.key_id)
            # It authenticated: it is live, even if its id was deleted before.
            remember_secret(key, key_id=key_id, alive=True)
            return Identity(doc.text(spec.service_account), key_id, rid)
        return self._call("whoami", spec, {}, key, parse)

    # --- one call -------------------------------------------------------------------------

    def _call(self, name: str, spec: Spec, values: dict[str, str], auth: Secret,
              parse: Callable[[Fields, str | None], T]) -> T:
        what = {"service_account": "account", "key_id": "key id"}
        segments = {k: path_segment(v, what[k]) for k, v in values.items() if k in what}
        call = Call(name, spec.method, _fill(spec.path, {**values, **segments}),
                    None if spec.body is None else _body(spec.body, values),
                    service_account=values.get("service_account"),
                    key_id=values.get("key_id"), gone_is_success=name == "delete_key")

        def read(call: Call, answer: Answer, now: datetime) -> T | RotatorError:
            return self._interpret(call, spec, answer, now, parse, auth)

        secret_at = spec.secret if isinstance(spec, CreateCall) else None
        return self._session.request(call, auth, read,
                                     lambda answer: _issued(answer, secret_at))

    def _interpret(self, call: Call, spec: Spec, answer: Answer, now: datetime,
                   parse: Callable[[Fields, str | None], T], auth: Secret) -> T | RotatorError:
        status, rid = answer.status, answer.request_id
        if status == spec.status:
            return _parse_success(call, answer, parse)
        if isinstance(spec, DeleteCall) and status == spec.gone_status and (
                spec.gone_code is None or answer.code == spec.gone_code):
            return parse(PointerFields(call, None, "", gone=True), rid)
        if 200 <= status < 300:
            return ProtocolError(f"{call.name}: answered {status}, where the config "
                                 f"expects {spec.status}",
                                 **call.context(status=status, request_id=rid))
        c = self._config
        error = failure(call, answer, now, service=self._session.service,
                        key_limit_code=c.key_limit_code, retry_after=c.rate_limit.retry_after,
                        reset=c.rate_limit.reset)
        issued = _issued(answer, spec.secret if isinstance(spec, CreateCall) else None)
        return error.with_context(
            detail=plain_detail(c, answer.document, auth.reveal(), *issued))


def _parse_success(call: Call, answer: Answer,
                   parse: Callable[[Fields, str | None], T]) -> T | RotatorError:
    status, rid = answer.status, answer.request_id
    context = call.context(status=status, request_id=rid)
    if answer.body is None:
        return ProtocolError(f"{call.name}: the response is larger than "
                             f"{MAX_BODY_BYTES} bytes", **context)
    if call.name != "delete_key" and not answer.parsed:
        return ProtocolError(f"{call.name}: the response is not JSON", **context)
    try:
        return parse(PointerFields(call, answer.document, ""), rid)
    except ProtocolError as exc:
        return exc.with_context(status=status, request_id=rid)


def _issued(answer: Answer, secret_at: str | None) -> tuple[str, ...]:
    """The key an answer carries (at the create call's ``secret``), kept out of errors."""
    if secret_at is None:
        return ()
    value = PointerFields(Call("", "", ""), answer.document, "").text_or_none(secret_at)
    return (value,) if value else ()
