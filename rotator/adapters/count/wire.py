"""Count's envelope: where its answers keep the value, the request id and the error code.

Owns the reading of Count's answers (docs/count-api.md): the JSON envelope (``success``,
``result``, ``request_id``, ``error.code``) and what a status means for Count, on the
shared table of ``rotator.adapters.keyapi.wire``:

    2xx with the envelope            the parsed value (off contract: ProtocolError)
    404 key_not_found on a delete    the parsed value, marked ``gone``
    409 key_limit_reached            KeyLimitReached; any other status as the shared table

Pure: no client, no retries, no clock (the caller passes the time in).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from rotator.adapters.keyapi.wire import MAX_BODY_BYTES, Answer, Call, Fields, Reading, failure
from rotator.core.errors import ProtocolError, RotatorError

__all__ = ["COUNT_READING", "MAX_BODY_BYTES", "interpret"]

T = TypeVar("T")


def _member(*names: str) -> Callable[[Any], object]:
    def read(document: Any) -> object:
        for name in names:
            document = document.get(name) if isinstance(document, dict) else None
        return document
    return read


COUNT_READING = Reading(request_id=_member("request_id"), code=_member("error", "code"))


def interpret(call: Call, answer: Answer, parse: Callable[[Fields, str | None], T],
              now: datetime) -> T | RotatorError:
    """A 2xx parsed into its value, or the error that any other answer means.

    ``now`` is when the answer arrived: a 429's Retry-After date or RateLimit-Reset epoch
    becomes seconds from then.
    """
    if 200 <= answer.status < 300:
        return _parse_success(call, answer, parse)
    if answer.status == 404 and call.gone_is_success and answer.code == "key_not_found":
        return parse(Fields(call, {}, "result", gone=True), answer.request_id)
    return failure(call, answer, now, service="Count", key_limit_code="key_limit_reached")


def _parse_success(call: Call, answer: Answer,
                   parse: Callable[[Fields, str | None], T]) -> T | RotatorError:
    document = answer.document
    if answer.body is None:
        problem = f"is larger than {MAX_BODY_BYTES} bytes"
    elif not answer.parsed or not isinstance(document, dict):
        problem = "is not a JSON object"
    elif document.get("success") is not True:
        problem = "has no 'success': true"
    elif not isinstance(document.get("result"), dict):
        problem = "has no 'result' object"
    else:
        try:
            return parse(Fields(call, document["result"], "result"), answer.request_id)
        except ProtocolError as exc:
            return exc.with_context(status=answer.status, request_id=answer.request_id)
    return ProtocolError(f"{call.name}: the response {problem}",
                         **call.context(status=answer.status, request_id=answer.request_id))
