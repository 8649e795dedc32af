"""deploy/: the manifests agree with each other and with the daemon's loopback default.

rotator binds 127.0.0.1 unless told otherwise, so every config a container runs must say
``0.0.0.0:9108`` itself; and the NetworkPolicy must admit that very port and be applied.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml

from rotator.config.daemon import DaemonConfig

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBERNETES = DEPLOY / "kubernetes"


def manifest(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((KUBERNETES / name).read_text())
    return loaded


def kubernetes_listen() -> str:
    config = tomllib.loads(manifest("configmap.yaml")["data"]["config.toml"])
    listen: str = config["daemon"]["listen"]
    return listen


def test_every_container_config_sets_its_listen_address_explicitly() -> None:
    assert DaemonConfig().host == "127.0.0.1"
    compose = tomllib.loads((DEPLOY / "compose" / "config.toml").read_text())
    assert compose["daemon"]["listen"] == "0.0.0.0:9108"
    assert kubernetes_listen() == "0.0.0.0:9108"


def test_the_network_policy_is_applied_and_admits_the_daemon_port_only() -> None:
    resources = manifest("kustomization.yaml")["resources"]
    assert "networkpolicy.yaml" in resources
    assert all((KUBERNETES / name).is_file() for name in resources)
    policy = manifest("networkpolicy.yaml")
    assert policy["kind"] == "NetworkPolicy"
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    pod_labels = manifest("deployment.yaml")["spec"]["template"]["metadata"]["labels"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    [rule] = policy["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == [int(kubernetes_listen().rpartition(":")[2])]
    assert all("namespaceSelector" in peer and "podSelector" in peer for peer in rule["from"])


def test_the_network_policy_lets_rotator_reach_dns_vault_postgres_and_count() -> None:
    egress = manifest("networkpolicy.yaml")["spec"]["egress"]
    ports = {(p["port"], p["protocol"]) for rule in egress for p in rule["ports"]}
    assert ports == {(53, "UDP"), (53, "TCP"), (8200, "TCP"), (5432, "TCP"), (443, "TCP")}
    [public] = [rule for rule in egress if any("ipBlock" in peer for peer in rule["to"])]
    block = public["to"][0]["ipBlock"]
    assert block["cidr"] == "0.0.0.0/0" and "10.0.0.0/8" in block["except"]
