"""Zero downtime with a real consumer: ``bao agent`` renders the key from OpenBao to a file,
a consumer process (``tests/integration/consumer.py``) reads that file and calls the Count
emulator's ``whoami`` continuously, and the real CLI rotates the key again and again.

With a grace window longer than the agent's render interval the consumer never fails;
with a grace window shorter than it, the consumer holds a revoked key and fails: the
grace window is what protects consumers.
"""

from __future__ import annotations

import hashlib
import json
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.bao_agent import StartAgent
from tests.integration.conftest import MakeWorld
from tests.integration.world import World

pytestmark = [pytest.mark.integration,
              pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 10.0


def fingerprint(secret: str) -> str:
    """The consumer's fingerprint (sha256[:12]): only these ever leave a test's locals."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()[:12]


def start_consumer(world: World, key_file: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.consumer", str(key_file),
         f"{world.emulator.url}/v1/whoami", str(out)],
        cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def wait_ready(consumer: subprocess.Popen[str]) -> None:
    """Until the consumer's first successful call (it prints ``ready``)."""
    assert consumer.stdout is not None
    readable, _, _ = select.select([consumer.stdout], [], [], READY_TIMEOUT)
    line = consumer.stdout.readline() if readable else ""
    if line.strip() != "ready":
        consumer.kill()
        _, err = consumer.communicate()
        pytest.fail(f"the consumer never succeeded (exit {consumer.returncode}): {err}",
                    pytrace=False)


def stop_consumer(consumer: subprocess.Popen[str], out: Path) -> dict[str, Any]:
    """SIGTERM; the consumer writes its summary and exits 0. Kills it if it does not."""
    try:
        consumer.send_signal(signal.SIGTERM)
        _, err = consumer.communicate(timeout=10)
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.communicate()
    assert consumer.returncode == 0, err
    summary: dict[str, Any] = json.loads(out.read_text())
    return summary


def wait_rendered(key_file: Path, secret: str, timeout: float) -> None:
    """Until the agent has rendered ``secret`` (compared by fingerprint)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if fingerprint(key_file.read_text().strip()) == fingerprint(secret):
                return
        except OSError:
            pass
        time.sleep(0.02)
    pytest.fail(f"bao agent did not render the new key within {timeout:g}s", pytrace=False)


def rotate(world: World, grace: str, served: list[str]) -> None:
    """One rotation through the CLI; the old key must really be dead afterwards."""
    result = world.cli("rotate", "app", "--grace", grace)
    assert result.returncode == 0, result.stderr
    _, new, _ = world.vault_secret("app")
    assert new != served[-1], "the rotation did not change the key in Vault"
    assert world.whoami(served[-1]).status_code == 401, "the old key was not revoked"
    assert world.whoami(new).status_code == 200
    served.append(new)


def report(name: str, summary: dict[str, Any]) -> None:
    brief = {k: v for k, v in summary.items() if k != "failed"}
    failed = sorted({f["fingerprint"] for f in summary["failed"]})
    print(f"{name}: {json.dumps(brief)}; failed keys: {failed}")


def test_grace_longer_than_render_interval_means_zero_consumer_failures(
        make_world: MakeWorld, bao_agent: StartAgent, tmp_path: Path) -> None:
    rotations, grace = 6, "2s"                      # the agent re-renders every 500ms
    w = make_world("app", grace=grace)
    agent = bao_agent("count/app", mount=w.mount, render_interval="500ms")
    served = [w.vault_secret("app")[1]]            # every key Vault served, in order
    out = tmp_path / "consumer.json"
    consumer = start_consumer(w, agent.key_file, out)
    try:
        wait_ready(consumer)
        started = time.time()
        for _ in range(rotations):
            rotate(w, grace, served)
        ended = time.time()
        wait_rendered(agent.key_file, served[-1], timeout=5)
        time.sleep(0.3)                             # the consumer uses the last key a while
    finally:
        summary = stop_consumer(consumer, out)
    report("grace 2s > render 500ms", summary)

    assert summary["failures"] == 0, summary["failed"][:10]
    assert summary["no_key"] == 0                   # the agent never exposed an empty file
    # It followed every rotation, in order: each key Vault served worked for the consumer.
    assert summary["ok_fingerprints"] == [fingerprint(s) for s in served]
    assert summary["last_ok_fingerprint"] == fingerprint(served[-1])
    # And it ran the whole time, without a hole: at least 10 calls a second (nominally 40+).
    assert summary["first_success_at"] < started and summary["last_success_at"] > ended
    assert summary["successes"] >= 10 * (ended - started)
    assert summary["max_success_gap"] < 1.0
    w.assert_invariants("app")


def test_grace_shorter_than_render_interval_breaks_consumers(
        make_world: MakeWorld, bao_agent: StartAgent, tmp_path: Path) -> None:
    rotations, grace = 3, "0s"                      # the agent re-renders every 3s only
    w = make_world("app", grace=grace)
    agent = bao_agent("count/app", mount=w.mount, render_interval="3s")
    served = [w.vault_secret("app")[1]]
    rotated_at: list[float] = []                    # when each served[i] began to be replaced
    out = tmp_path / "consumer.json"
    consumer = start_consumer(w, agent.key_file, out)
    try:
        wait_ready(consumer)
        for _ in range(rotations):
            rotated_at.append(time.time())
            rotate(w, grace, served)
            # The consumer holds the revoked key until the agent's next render.
            wait_rendered(agent.key_file, served[-1], timeout=10)
            time.sleep(0.3)
    finally:
        summary = stop_consumer(consumer, out)
    report("grace 0s < render 3s", summary)

    assert summary["failures"] > 0, "a revoked key was never used: the counter-case proves nothing"
    replaced = {fingerprint(s): i for i, s in enumerate(served[:-1])}
    for failure in summary["failed"]:
        # Each failure is a key that rotator had replaced and revoked, after it did so.
        assert failure["status"] == 401, failure
        assert failure["fingerprint"] in replaced, failure
        assert failure["at"] > rotated_at[replaced[failure["fingerprint"]]], failure
    # The agent's next render healed the consumer: the stale key was the only problem.
    assert summary["last_ok_fingerprint"] == fingerprint(served[-1])
    assert summary["last_success_at"] > max(f["at"] for f in summary["failed"])
    assert summary["ok_fingerprints"] == [fingerprint(s) for s in served]
    w.assert_invariants("app")
