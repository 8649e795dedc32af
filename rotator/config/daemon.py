"""The config of ``rotator run``: schedules, the daemon's listener and loop, logging."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from rotator.config.base import Duration, Frozen
from rotator.scheduling.schedule import Schedule, Window, check_cron, check_timezone, parse_window

__all__ = ["DaemonConfig", "LoggingConfig", "ScheduleConfig", "resolve_schedule"]

def _window(value: object) -> object:
    return parse_window(value) if isinstance(value, str) else value


class ScheduleConfig(Frozen):
    """When the daemon rotates a target. Unset keys fall back to ``[defaults.schedule]``."""

    every: Duration | None = None
    cron: str | None = None
    timezone: str | None = None
    window: Annotated[Window, BeforeValidator(_window)] | None = None
    jitter: Duration | None = None
    max_key_age: Duration | None = None
    retry_failed_after: Duration | None = None
    enabled: bool | None = None

    @field_validator("every")
    @classmethod
    def _positive(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("must be longer than 0s")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            check_timezone(value)
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> ScheduleConfig:
        if self.every is not None and self.cron is not None:
            raise ValueError("set either 'every' or 'cron', not both")
        if self.cron is not None:
            check_cron(self.cron, self.timezone or "UTC")
        return self


# What a target gets when neither it nor [defaults.schedule] says otherwise.
_BUILTIN_SCHEDULE = Schedule(every=30 * 86400.0)


def resolve_schedule(default: ScheduleConfig, own: ScheduleConfig | None) -> Schedule:
    """The target's table wins key by key; ``every``/``cron`` are one choice, taken whole."""
    own = own or ScheduleConfig()
    if own.every is not None or own.cron is not None:
        every, cron = own.every, own.cron
    elif default.every is not None or default.cron is not None:
        every, cron = default.every, default.cron
    else:
        every, cron = _BUILTIN_SCHEDULE.every, None

    def pick(key: str, builtin: object) -> Any:
        for table in (own, default):
            value = getattr(table, key)
            if value is not None:
                return value
        return builtin

    base = _BUILTIN_SCHEDULE
    return Schedule(
        every=every, cron=cron, timezone=pick("timezone", base.timezone),
        window=pick("window", base.window), jitter=pick("jitter", base.jitter),
        max_key_age=pick("max_key_age", base.max_key_age),
        retry_failed_after=pick("retry_failed_after", base.retry_failed_after),
        enabled=pick("enabled", base.enabled))


def _listen_address(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected HOST:PORT as a string (e.g. '127.0.0.1:9108')")
    _, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("expected HOST:PORT (e.g. '127.0.0.1:9108')")
    return value


class DaemonConfig(Frozen):
    """``rotator run``: where health and metrics are served, how often SQL is re-read."""

    listen: Annotated[str, BeforeValidator(_listen_address)] = "127.0.0.1:9108"
    poll_interval: Duration = 60.0
    shutdown_timeout: Duration = 25.0
    workers: int = Field(default=4, ge=1, le=64)

    @field_validator("poll_interval")
    @classmethod
    def _sane_poll(cls, value: float) -> float:
        if value < 0.05:
            raise ValueError("must be at least 50ms")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]") or "0.0.0.0"  # noqa: S104

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class LoggingConfig(Frozen):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"
