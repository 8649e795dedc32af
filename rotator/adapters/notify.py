"""The notification sinks: a signed generic webhook and a Slack incoming webhook.

``send`` makes one attempt (the outbox retries, with its back-off, across restarts) and
raises ``DeliveryFailed`` with a message that is safe to store and log: the status code
or the kind of transport error, never the URL (a Slack URL is its credential), a header,
the response body or the HMAC key.
"""

from __future__ import annotations

from typing import Protocol

import httpx

from rotator.adapters.http import webhook_client
from rotator.core.notices import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    signature,
    slack_body,
    webhook_body,
)
from rotator.core.secret import Secret

__all__ = ["DeliveryFailed", "Sink", "SlackSink", "WebhookSink"]


class DeliveryFailed(Exception):
    """One attempt did not reach the receiver, or it did not take the body (not 2xx)."""


class Sink(Protocol):
    def send(self, delivery_id: str, event: str, stored: str) -> None: ...

    def close(self) -> None: ...


class _Poster:
    """POST one body to one URL through the guarded client; 2xx is delivered."""

    def __init__(self, url: Secret, timeout: float, verify: bool | str, proxy: str | None,
                 transport: httpx.BaseTransport | None) -> None:
        self._url = url
        self._client = webhook_client(timeout=timeout, verify=verify, proxy=proxy,
                                      transport=transport)

    def post(self, body: bytes, headers: dict[str, str]) -> None:
        try:
            response = self._client.post(self._url.reveal(), content=body, headers=headers)
        except httpx.TimeoutException:
            raise DeliveryFailed("no answer within the sink's timeout") from None
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"could not reach the receiver ({type(exc).__name__})") from None
        if not 200 <= response.status_code < 300:
            raise DeliveryFailed(f"the receiver answered HTTP {response.status_code}")

    def close(self) -> None:
        self._client.close()


class WebhookSink:
    """The generic JSON body, signed: ``X-Rotator-Signature: sha256=<hex HMAC>``."""

    def __init__(self, url: str, secret: Secret, *, timeout: float,
                 verify: bool | str = True, proxy: str | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._secret = secret
        self._poster = _Poster(Secret(url), timeout, verify, proxy, transport)

    def send(self, delivery_id: str, event: str, stored: str) -> None:
        body = webhook_body(delivery_id, stored)
        self._poster.post(body, {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(body, self._secret.reveal().encode("utf-8")),
            DELIVERY_HEADER: delivery_id, EVENT_HEADER: event})

    def close(self) -> None:
        self._poster.close()


class SlackSink:
    """Slack's incoming-webhook body (``text`` and blocks); the URL is the credential."""

    def __init__(self, url: Secret, *, timeout: float, verify: bool | str = True,
                 proxy: str | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._poster = _Poster(url, timeout, verify, proxy, transport)

    def send(self, delivery_id: str, event: str, stored: str) -> None:
        self._poster.post(slack_body(delivery_id, stored), {
            "Content-Type": "application/json", DELIVERY_HEADER: delivery_id,
            EVENT_HEADER: event})

    def close(self) -> None:
        self._poster.close()

