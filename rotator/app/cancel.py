"""``rotator cancel TARGET --reason TEXT``: roll an in-flight rotation back, when safe.

The rules are the engine's (``Runner.cancel``, ``machine.cancel_refusal``); this only
builds the runner and words a held lease the way ``rotate`` does (which rotation, who
holds it).
"""

from __future__ import annotations

from rotator.app.batch import holder_id
from rotator.app.in_flight import lease_held_detail
from rotator.app.runtime import Runtime
from rotator.core.errors import LeaseHeld
from rotator.engine.runner import CancelReport, Runner

__all__ = ["CancelReport", "cancel_rotation"]


def cancel_rotation(rt: Runtime, name: str, *, actor: str, reason: str) -> CancelReport:
    """``LeaseHeld`` naming the rotation and the holder if a live process holds the target."""
    spec = rt.spec(name)
    runner = Runner(providers=rt.providers, store=rt.store, repo=rt.repo, clock=rt.clock,
                    holder=holder_id(), lease_ttl=rt.config.defaults.lease_ttl,
                    call_deadline=rt.config.call_deadline())
    try:
        return runner.cancel(spec, actor=actor, reason=reason)
    except LeaseHeld as exc:
        detail = lease_held_detail(rt.repo, name, exc)
        raise LeaseHeld(f"{name}: not cancelled: {detail}", target=name) from None
