"""Two targets out of the config whose work would write one Vault path: neither is
finished, each told why (``app.orphans``); a path written by one of them alone is."""

from __future__ import annotations

from datetime import UTC, datetime

from rotator.app.orphans import _block_shared_paths
from rotator.core.model import Rotation, SecretRef

T0 = datetime(2026, 12, 3, tzinfo=UTC)


def _row(target: str, path: str, field: str = "api_key") -> Rotation:
    return Rotation(rotation_id=f"rot_{target}", target=target, service_account="sa_1",
                    trigger="schedule", actor="scheduler", grace_seconds=60, started_at=T0,
                    provider="count", vault_ref=SecretRef("secret", path, field))


def test_orphans_sharing_a_vault_path_are_both_kept_and_a_lone_one_is_finished() -> None:
    a, b, c = _row("a", "count/app"), _row("b", "count/app", "other_key"), _row("c", "count/c")
    fate: dict[str, tuple[Rotation | None, str | None]] = {
        "a": (a, None), "b": (b, None), "c": (c, None), "d": (None, "before revision 0009")}
    _block_shared_paths(fate)
    assert fate["a"] == (None, "its Vault path is also that of 'b', no longer in the config "
                               "either, and one path takes one rotation at a time")
    assert fate["b"][0] is None and fate["b"][1] is not None and "that of 'a'" in fate["b"][1]
    assert fate["c"] == (c, None)
    assert fate["d"] == (None, "before revision 0009")
