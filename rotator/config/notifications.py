"""``[notifications]``: the thresholds of the sweep's conditions and the sinks, by name.

    [notifications]
    stuck_after = "1h"          # a rotation in one step this long (grace: past its end)
    overdue_after = "1d"        # a schedule due this long without a completed rotation
    dispatch_interval = "5s"    # how often the dispatcher looks for due deliveries

    [notifications.sinks.ops]
    type = "webhook"            # generic JSON, signed X-Rotator-Signature: sha256=<hex>
    url = "https://hooks.example.internal/rotator"
    secret_env = "ROTATOR_WEBHOOK_SECRET"   # or secret_file: the HMAC key
    events = ["rotation_failed", "rotation_rolled_back"]   # default: every event

    [notifications.sinks.chat]
    type = "slack"              # a Slack incoming webhook: its URL is the credential
    url_file = "/run/secrets/slack-webhook-url"   # or url_env

No message quotes a value: a URL may carry a token.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from rotator.config.base import Duration, Frozen, check_proxy_url, check_url, refuse_plain_http
from rotator.config.locate import KeyedProblem
from rotator.core.notices import NoticeEvent, Route

__all__ = ["NotificationsConfig", "SlackSinkConfig", "WebhookSinkConfig"]



def _longer_than_zero(value: float) -> float:
    if value <= 0:
        raise ValueError("must be longer than 0s")
    return value


# A wait or a limit: zero would mean a tight loop, or never.
Positive = Annotated[Duration, AfterValidator(_longer_than_zero)]

_SINK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class _SinkBase(Frozen):
    events: tuple[NoticeEvent, ...] = tuple(NoticeEvent)
    timeout: Positive = 10.0            # one attempt, connect to last byte
    backoff: Positive = 5.0             # the wait after a first failed attempt, doubling
    max_backoff: Positive = 3600.0      # ... up to this; attempts never stop
    ca_bundle: Path | None = None
    proxy: str | None = None   # the environment's proxy variables are never read

    @field_validator("events")
    @classmethod
    def _some(cls, value: tuple[NoticeEvent, ...]) -> tuple[NoticeEvent, ...]:
        if not value:
            raise ValueError("names no event: leave it out for every event")
        return value

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, value: str | None) -> str | None:
        return None if value is None else check_proxy_url(value)


class WebhookSinkConfig(_SinkBase):
    type: Literal["webhook"]
    url: str
    allow_insecure_http: bool = False
    # The HMAC-SHA256 key of X-Rotator-Signature: exactly one of the two.
    secret_env: str | None = None
    secret_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value, schemes=("https", "http"))

    @model_validator(mode="after")
    def _secure(self) -> WebhookSinkConfig:
        refuse_plain_http(self.url, self.allow_insecure_http)
        return self


class SlackSinkConfig(_SinkBase):
    type: Literal["slack"]
    # The incoming webhook's URL holds its token: it comes from a variable or a file.
    url_env: str | None = None
    url_file: Path | None = None


SinkConfig = Annotated[WebhookSinkConfig | SlackSinkConfig, Field(discriminator="type")]


class NotificationsConfig(Frozen):
    stuck_after: Positive = 3600.0
    overdue_after: Positive = 86400.0
    dispatch_interval: Positive = 5.0
    sinks: dict[str, SinkConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _names(self) -> NotificationsConfig:
        for name in self.sinks:
            if not _SINK_NAME.match(name):
                raise KeyedProblem(f"notifications.sinks.{name}",
                                   "a sink name is 1-64 letters, digits, '_', '.' or '-', "
                                   "starting with a letter or digit")
        return self

    def routes(self) -> tuple[Route, ...]:
        return tuple(Route(name, frozenset(sink.events)) for name, sink in self.sinks.items())
