"""The shipped alert rules, end to end: a real Prometheus (Debian's ``prometheus``) scrapes
a real daemon, loads deploy/prometheus/rules.yaml, and the alert for a failed rotation is
seen firing through Prometheus's HTTP API, for that target only.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from rotator.devtools.devvault import free_port
from tests.integration.conftest import MakeWorld
from tests.integration.daemon_process import Daemon, daemon_config, metric, wait_for

pytestmark = pytest.mark.integration

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules.yaml"
PROMETHEUS_CONFIG = """
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {rules}
scrape_configs:
  - job_name: rotator
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


def _prometheus(tmp_path: Path, daemon_port: int) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("prometheus")
    assert binary is not None, "needs Debian's prometheus package (.ci/run installs it)"
    config = tmp_path / "prometheus.yml"
    config.write_text(PROMETHEUS_CONFIG.format(rules=RULES, port=daemon_port))
    port = free_port()
    with (tmp_path / "prometheus.log").open("w") as log:   # the child keeps its own copy
        proc = subprocess.Popen([binary, f"--config.file={config}",
                                 f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=log, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


def _query(url: str, promql: str) -> list[dict[str, object]]:
    answer = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]  # type: ignore[no-any-return]


def _firing(url: str, name: str) -> set[str]:
    """The targets ``name`` fires for."""
    alerts = httpx.get(f"{url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return {a["labels"].get("target", "") for a in alerts
            if a["labels"]["alertname"] == name and a["state"] == "firing"}


def _up(url: str) -> bool:
    try:
        return any(r["value"][1] == "1" for r in _query(url, 'up{job="rotator"}'))  # type: ignore[index]
    except httpx.HTTPError:
        return False


def test_a_failed_rotation_fires_its_alert_in_a_real_prometheus(make_world: MakeWorld,
                                                                 tmp_path: Path) -> None:
    world = make_world("app", "broken", grace="0s")
    config, port = daemon_config(world, "d1", schedule='every = "3s"')
    prometheus, url = _prometheus(tmp_path, port)
    daemon = Daemon(world, config, port)
    try:
        daemon.wait_ready()
        wait_for(lambda: _up(url), 60, lambda: "Prometheus to scrape the daemon:\n"
                 + (tmp_path / "prometheus.log").read_text()[-3000:])
        # Both targets' failure counters are there at 0 before anything failed: the
        # first failure is then an increase, which a series born at 1 would not be.
        assert {r["metric"]["target"] for r in _query(  # type: ignore[index]
            url, "rotator_rotation_failures_total == 0")} == {"app", "broken"}
        assert _firing(url, "RotatorRotationFailed") == set()
        # broken's secret gone: its next rotation is refused at plan. Deleted right after a
        # rotation of broken completed (the next is 3 s away): gone under a rotation in
        # flight, it would block that rotation's rollback instead (Vault can no longer
        # say which key it serves), which is no failure (seen on a loaded machine).
        done = metric(daemon.metrics(), "rotator_rotations_completed_total", target="broken")
        wait_for(lambda: metric(daemon.metrics(), "rotator_rotations_completed_total",
                                target="broken") > done, 30, "a rotation of broken to complete")
        client = world.vault()
        try:
            client.secrets.kv.v2.delete_metadata_and_all_versions(
                path="count/broken", mount_point=world.mount)
        finally:
            client.adapter.close()
        wait_for(lambda: metric(daemon.metrics(), "rotator_rotation_failures_total",
                                target="broken") >= 1, 30, "broken's rotation to fail")
        wait_for(lambda: _firing(url, "RotatorRotationFailed") == {"broken"}, 30,
                 lambda: f"the alert to fire: {httpx.get(f'{url}/api/v1/alerts').text}")
        assert metric(daemon.metrics(), "rotator_rotation_failures_total", target="app") == 0
        assert daemon.terminate()[0] == 0
    finally:
        daemon.close()
        prometheus.terminate()
        prometheus.wait(30)
