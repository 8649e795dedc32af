"""Usage-aware grace: whether the old key may go now, from when the provider saw it used.

A pure decision. Where the provider reports a key's ``last_used_at`` and the target has a
``quiet_period``, the old key is held past its grace window while consumers still use it,
and goes once it has been quiet for ``quiet_period``; the hold never lasts past
``max_grace`` after the new key was stored, where the key goes whatever its use. The
provider's clock stamps ``last_used_at`` and rotator's clock reads ``now``: a skew
between the two shifts the quiet period by as much (docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["GracePolicy", "Hold", "MaxGraceReached", "Quiet", "UsageVerdict", "judge_usage"]


@dataclass(frozen=True, slots=True)
class GracePolicy:
    """``quiet_period`` and ``max_grace`` in seconds; config checks quiet < max."""

    quiet_period: float
    max_grace: float


@dataclass(frozen=True, slots=True)
class Hold:
    """Still in use: look again at ``until`` (never later than the max-grace deadline)."""

    last_used_at: datetime | None   # None: the usage could not be read
    until: datetime


@dataclass(frozen=True, slots=True)
class Quiet:
    """Unused since ``last_used_at`` (None: never used, or the provider does not say)."""

    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class MaxGraceReached:
    """Held as long as ``max_grace`` allows: revoked, used or not."""

    last_used_at: datetime | None
    deadline: datetime


UsageVerdict = Hold | Quiet | MaxGraceReached


def judge_usage(policy: GracePolicy, *, stored_at: datetime, last_used_at: datetime | None,
                usage_known: bool, now: datetime) -> UsageVerdict:
    """The old key's fate at ``now``, its grace window being over.

    ``stored_at``: when the new key went into Vault (the grace window's start).
    ``usage_known``: the provider's listing was read; when it was not, the key is held a
    ``quiet_period`` more (a failed read proves no quiet), still bounded by ``max_grace``.
    A key the provider lists with no ``last_used_at`` is quiet: that is the behaviour
    without usage-aware grace, kept for a provider that does not report use.
    """
    quiet = timedelta(seconds=policy.quiet_period)
    if usage_known and (last_used_at is None or last_used_at + quiet <= now):
        return Quiet(last_used_at)
    deadline = stored_at + timedelta(seconds=policy.max_grace)
    if now >= deadline:
        return MaxGraceReached(last_used_at, deadline)
    if last_used_at is None:
        return Hold(None, min(now + quiet, deadline))
    # Both ends lie after now, so the next look is never due at once: no busy loop.
    return Hold(last_used_at, min(last_used_at + quiet, deadline))
