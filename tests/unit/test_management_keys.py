"""Management keys read from a target's Vault path (self-rotation), on fake ports.

The key is read once and kept; a write by this process to that path (the store of its
rotation, a rollback's restore) makes the next use read it again, and a copy
``MAX_AGE`` old is read again too (another process rotated it), as is one the provider
refused when Vault now holds another key. On the runner: a
rotation of the management target itself switches to the new key right after the
store, and revokes the old key with the new one.
"""

from __future__ import annotations

from rotator.core.model import Status
from rotator.core.ports import SecretRef
from rotator.core.secret import Secret
from rotator.core.target import TargetSpec
from rotator.engine.management import MAX_AGE, ManagementKeys, bearer
from rotator.engine.runner import Runner
from tests.fakes import FakeClock, FakeProvider, FakeStore, MemoryRepository

ADMIN = SecretRef("secret", "count/admin", "api_key")
APP = SecretRef("secret", "count/app", "api_key")


def test_the_key_is_read_once_then_again_after_a_write_or_when_old() -> None:
    store, clock = FakeStore(), FakeClock()
    store.put(ADMIN, Secret("first"))
    keys = ManagementKeys(store, clock)
    assert keys.key(ADMIN).reveal() == keys.key(ADMIN).reveal() == "first"
    assert store.calls.count("read") == 1
    store.put(ADMIN, Secret("second"))
    keys.written(APP)                          # another path: the copy stays
    assert keys.key(ADMIN).reveal() == "first"
    keys.written(ADMIN)
    assert keys.key(ADMIN).reveal() == "second"
    store.put(ADMIN, Secret("third"))          # written elsewhere: seen once it is old
    clock.sleep(MAX_AGE)
    assert keys.key(ADMIN).reveal() == "third"


def test_a_refused_copy_is_read_again_once_and_only_if_vault_holds_another_key() -> None:
    store, clock = FakeStore(), FakeClock()
    store.put(ADMIN, Secret("first"))
    keys = ManagementKeys(store, clock)
    held = keys.key(ADMIN)
    assert keys.refused(ADMIN, held) is None          # Vault holds it still: the refusal stands
    store.put(ADMIN, Secret("second"))                # another process rotated it
    fresh = keys.refused(ADMIN, held)
    assert fresh is not None and fresh.reveal() == "second"
    reads = store.calls.count("read")
    assert keys.key(ADMIN) == fresh and store.calls.count("read") == reads    # kept


def test_the_bearer_is_the_given_key_the_management_target_s_or_the_account_s_own() -> None:
    store, clock = FakeStore(), FakeClock()
    store.put(ADMIN, Secret("admin-key"))
    store.put(APP, Secret("app-key"))

    def spec(**management: object) -> TargetSpec:
        return TargetSpec(name="app", provider="count", service_account="sa_1", ref=APP,
                          grace_seconds=10, probe_timeout=5, probe_interval=1,
                          **management)  # type: ignore[arg-type]

    assert bearer(spec(management_key=Secret("given")), store).reveal() == "given"
    # Self-rotation: the management target's key, never the account's own (reconcile
    # --fix read the account's before).
    assert bearer(spec(management_key_ref=ADMIN), store).reveal() == "admin-key"
    keys = ManagementKeys(store, clock)
    assert bearer(spec(management_key_ref=ADMIN), store, keys).reveal() == "admin-key"
    store.put(ADMIN, Secret("rotated"))
    assert bearer(spec(management_key_ref=ADMIN), store, keys).reveal() == "admin-key"  # copy
    assert bearer(spec(), store).reveal() == "app-key"                   # self mode


def test_rotating_the_management_target_switches_to_its_new_key_after_the_store() -> None:
    clock = FakeClock()
    provider, store, repo = FakeProvider(clock), FakeStore(), MemoryRepository()
    admin = provider.seed("sa_admin")
    store.put(ADMIN, admin)
    store.put(APP, provider.seed("sa_1"))

    def spec(name: str, account: str, ref: SecretRef) -> TargetSpec:
        return TargetSpec(name=name, provider="count", service_account=account, ref=ref,
                          grace_seconds=10, probe_timeout=5, probe_interval=1,
                          management_key_ref=ADMIN)

    runner = Runner(providers={"count": provider}, store=store, repo=repo, clock=clock,
                    holder="h", lease_ttl=60)
    first = runner.rotate(spec("admin", "sa_admin", ADMIN))
    assert first.rotation.status is Status.COMPLETED
    old_admin = first.rotation.old_key_id
    assert old_admin is not None and old_admin in provider.deleted   # revoked by the new key
    # The same runner manages the app's keys with the admin key it switched to.
    assert runner.rotate(spec("app", "sa_1", APP)).rotation.status is Status.COMPLETED
    assert provider.key_of(store.current(ADMIN)) == first.rotation.new_key_id
