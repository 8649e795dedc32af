"""The end of a grace window: revoke now, or (usage-aware grace) hold the old key longer.

Without a ``usage_grace`` policy the window's end is the old key's end, as it always was.
With one, the provider's listing says when the old key was last used, and the pure
``core.grace.judge_usage`` decides; every decision is a note in the audit trail. A hold
moves the rotation's stored deadline (``machine.GraceHeld``), so a restarted process, or
another replica, finds it in SQL and looks again then, never sooner: nothing of it is
kept in memory only.
"""

from __future__ import annotations

from datetime import datetime

import structlog

from rotator.core import machine as m
from rotator.core.errors import RotatorError
from rotator.core.grace import GracePolicy, Hold, MaxGraceReached, Quiet, judge_usage
from rotator.core.model import Rotation
from rotator.core.target import TargetSpec
from rotator.core.vocabulary import AuditAction, AuditResult
from rotator.engine.step_base import StepBase

__all__ = ["GraceKeeper"]

log = structlog.get_logger("rotator.grace")


def _at(moment: datetime | None) -> str:
    return "never" if moment is None else moment.isoformat(timespec="milliseconds")


class GraceKeeper(StepBase):
    def end_grace(self, rot: Rotation, spec: TargetSpec) -> m.Outcome:
        policy = rot.usage_grace
        if policy is None:
            self._trail.note_with_step(rot, AuditAction.GRACE_OVER, key_id=rot.old_key_id)
            return m.GraceElapsed()
        return self._judge(rot, spec, policy)

    def _judge(self, rot: Rotation, spec: TargetSpec, policy: GracePolicy) -> m.Outcome:
        assert rot.old_key_id is not None and rot.grace_started_at is not None
        now = self._clock.now()
        known, listed, last_used, why = True, True, None, ""
        try:
            listing = self._managing(
                spec, lambda auth: self._provider.list_keys(spec.service_account, auth))
        except RotatorError as exc:
            known, why = False, f"cannot read its last use: {type(exc).__name__}: {exc}"
        else:
            record = next((k for k in listing.keys if k.key_id == rot.old_key_id), None)
            listed = record is not None
            last_used = None if record is None else record.last_used_at
        if not listed:
            self._trail.note_with_step(rot, AuditAction.GRACE_OVER, key_id=rot.old_key_id,
                                       detail="the provider no longer lists the old key")
            return m.GraceElapsed()
        verdict = judge_usage(policy, stored_at=rot.grace_started_at, last_used_at=last_used,
                              usage_known=known, now=now)
        if isinstance(verdict, Quiet):
            if last_used is None:
                # What a provider that reports no use gets: the plain grace window.
                self._trail.note_with_step(rot, AuditAction.GRACE_OVER, key_id=rot.old_key_id,
                                           detail="the provider reports no use of the old key")
            else:
                self._trail.note_with_step(rot, AuditAction.GRACE_OVER, result=AuditResult.QUIET,
                                           key_id=rot.old_key_id,
                                           detail=f"quiet since {_at(last_used)} (last use), for "
                                                  f"{policy.quiet_period:g}s or more: revoking")
            return m.GraceElapsed()
        if isinstance(verdict, MaxGraceReached):
            detail = (f"max_grace {policy.max_grace:g}s reached at {_at(verdict.deadline)}; "
                      f"last use {_at(last_used)}: revoking it, used or not")
            self._trail.note_with_step(rot, AuditAction.GRACE_OVER,
                                       result=AuditResult.MAX_GRACE_REACHED,
                                       key_id=rot.old_key_id, detail=detail)
            log.warning("max_grace_reached", key_id=rot.old_key_id,
                        last_used_at=_at(last_used), detail=detail)
            return m.GraceElapsed()
        assert isinstance(verdict, Hold)
        return self._hold(rot, verdict, why)

    def _hold(self, rot: Rotation, verdict: Hold, why: str) -> m.Outcome:
        if verdict.last_used_at is None:
            result, detail = AuditResult.UNKNOWN, f"{why}; held until {_at(verdict.until)}"
        else:
            result = AuditResult.IN_USE
            detail = (f"still used at {_at(verdict.last_used_at)}; held until "
                      f"{_at(verdict.until)}")
        self._trail.note_with_step(rot, AuditAction.GRACE_HELD, result=result,
                                   key_id=rot.old_key_id, detail=detail)
        log.info("grace_held", key_id=rot.old_key_id, until=_at(verdict.until),
                 last_used_at=_at(verdict.last_used_at))
        return m.GraceHeld(verdict.until)
