"""An OpenBao server that survives a restart: file storage, one unseal key, KV v2 at secret/.

The dev server keeps everything in memory, so restarting it loses every secret; the chaos
soak needs a Vault that goes away and comes back with its data, as a real one does.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import hvac

from rotator.devtools.devvault import free_port
from tests.fixtures.openbao import find_bao

# OpenBao has no "file" storage; a one-node Raft cluster is its persistent backend.
CONFIG = """
storage "raft" {{
  path    = "{data}"
  node_id = "chaos"
}}
listener "tcp" {{
  address         = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster_port}"
  tls_disable     = true
}}
api_addr     = "http://127.0.0.1:{port}"
cluster_addr = "http://127.0.0.1:{cluster_port}"
"""


class PersistentVault:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self._config = workdir / "bao.hcl"
        (workdir / "data").mkdir(exist_ok=True)
        self._config.write_text(CONFIG.format(data=workdir / "data", port=self.port,
                                              cluster_port=free_port()))
        self._process: subprocess.Popen[bytes] | None = None
        self.root_token = ""
        self._unseal_key = ""
        self.start()
        try:
            init = self._client().sys.initialize(secret_shares=1, secret_threshold=1)
            self.root_token, self._unseal_key = init["root_token"], init["keys"][0]
            self._unseal()
            client = self.client()
            client.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
            client.adapter.close()
        except BaseException:
            self.stop()
            raise

    def _client(self) -> hvac.Client:
        # Initialising a Raft node takes about 5 s here.
        return hvac.Client(url=self.url, timeout=30)

    def client(self) -> hvac.Client:
        return hvac.Client(url=self.url, token=self.root_token, timeout=5)

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env["HOME"] = str(self._dir)
        log = (self._dir / "bao.log").open("ab")
        self._process = subprocess.Popen(
            [find_bao(), "server", f"-config={self._config}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self._client().sys.read_health_status(method="GET")
                break
            except Exception:  # not listening yet
                time.sleep(0.05)
        if self._unseal_key:
            self._unseal()

    def _unseal(self) -> None:
        self._client().sys.submit_unseal_key(self._unseal_key)
        # Unsealed is not yet active: the Raft node must elect itself leader first.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.answers():
                return
            time.sleep(0.05)
        raise AssertionError("the persistent OpenBao did not become active")

    def answers(self) -> bool:
        """Whether the server answers its health check as active, right now."""
        try:
            with urllib.request.urlopen(f"{self.url}/v1/sys/health", timeout=2) as answer:
                return bool(answer.status == 200)
        except (urllib.error.HTTPError, OSError):
            return False

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(20)
