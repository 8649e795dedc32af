"""``rotator demo``: the Count emulator, an OpenBao dev server and SQLite, two real rotations.

Everything runs on loopback ports chosen at start and is stopped at the end, so the demo
leaves no process behind. The config it writes is an ordinary one, printed for reading.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import hvac

from rotator.devtools.devvault import DevVault
from rotator.emulator import Emulator, EmulatorSettings

__all__ = ["run_demo"]

_CONFIG = """\
[database]
url = "sqlite:///{db}"

[vault]
url = "{vault_url}"
[vault.auth]
method = "token"
token_env = "ROTATOR_DEMO_VAULT_TOKEN"

[providers.count]
type = "count"
base_url = "{count_url}"
auth_mode = "admin"
management_key_env = "ROTATOR_DEMO_COUNT_ADMIN_KEY"

[defaults]
grace = "{grace}s"

[defaults.probe]
timeout = "10s"
interval = "100ms"

[targets.billing-export]
provider = "count"
service_account = "{sa_billing}"
vault_mount = "secret"
vault_path = "rotator/count/billing-export"

[targets.ci-deployer]
provider = "count"
service_account = "{sa_ci}"
vault_mount = "secret"
vault_path = "rotator/count/ci-deployer"
"""


def run_demo(grace: float = 3.0) -> int:
    settings = EmulatorSettings(key_limit=2, propagation_delay=0.3)
    with tempfile.TemporaryDirectory(prefix="rotator-demo-") as tmp, \
            Emulator(settings) as emulator, DevVault() as vault:
        admin = emulator.seed_account("admin", role="admin")
        billing = emulator.seed_account("billing-export")
        ci = emulator.seed_account("ci-deployer")
        client = hvac.Client(url=vault.url, token=vault.root_token)
        for account in (billing, ci):
            client.secrets.kv.v2.create_or_update_secret(
                path=f"rotator/count/{account.name}", secret={"api_key": account.secret},
                mount_point="secret")
        client.adapter.close()
        config = Path(tmp) / "rotator.toml"
        config.write_text(_CONFIG.format(
            db=Path(tmp) / "rotator.db", vault_url=vault.url, count_url=emulator.url,
            grace=grace, sa_billing=billing.account_id, sa_ci=ci.account_id))
        env = {**os.environ, "ROTATOR_DEMO_VAULT_TOKEN": vault.root_token,
               "ROTATOR_DEMO_COUNT_ADMIN_KEY": admin.secret}
        print(f"Count emulator at {emulator.url}; OpenBao dev server at {vault.url}")
        print(f"config ({config}):\n\n{config.read_text()}")
        base = ["--config", str(config), "--log-format", "console", "--log-level", "info"]
        steps = [
            ("$ rotator db upgrade", ["db", "upgrade"]),
            ("$ rotator rotate --all", ["rotate", "--all"]),
            ("$ rotator status", ["status"]),
            ("$ rotator audit", ["audit"]),
            ("$ rotator verify", ["verify"]),
        ]
        for title, argv in steps:
            print(f"\n{title}", flush=True)
            # The real command line, as a user runs it: the demo shows nothing it fakes.
            code = subprocess.run(  # noqa: S603 (this interpreter, arguments of our own)
                [sys.executable, "-m", "rotator", *base, *argv],
                env=env, check=False).returncode
            if code != 0:
                print(f"demo: '{title}' exited {code}")
                return code
        counters = emulator.state.counters()
        print(f"\nemulator: {sum(counters.creates.values())} key(s) created, "
              f"{sum(counters.deletes.values())} deleted, {counters.requests} requests")
    return 0
