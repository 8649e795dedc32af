"""deploy/: the manifests agree with each other and with the daemon's loopback default.

rotator binds 127.0.0.1 unless told otherwise, so every config a container runs must say
``0.0.0.0:9108`` itself; and the NetworkPolicy must admit that very port and be applied.
"""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import yaml

from rotator.config.daemon import DaemonConfig
from rotator.config.model import load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBERNETES = DEPLOY / "kubernetes"


def manifest(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((KUBERNETES / name).read_text())
    return loaded


def kubernetes_listen() -> str:
    config = tomllib.loads((KUBERNETES / "config.toml").read_text())
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


def _all_manifests() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, document) for path in sorted(KUBERNETES.glob("*.yaml"))
            for document in yaml.safe_load_all(path.read_text()) if document]


def test_the_kustomization_creates_the_namespace_it_puts_everything_in() -> None:
    kustomization = manifest("kustomization.yaml")
    assert kustomization["resources"][0] == "namespace.yaml"
    namespace = manifest("namespace.yaml")
    assert namespace["kind"] == "Namespace"
    assert namespace["metadata"]["name"] == kustomization["namespace"] == "rotator"


def test_metrics_have_exactly_one_scrape_path_the_service_monitor() -> None:
    assert "servicemonitor.yaml" in manifest("kustomization.yaml")["resources"]
    for name, document in _all_manifests():
        assert "prometheus.io/" not in yaml.safe_dump(document), name
    monitor = manifest("servicemonitor.yaml")
    service = manifest("service.yaml")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= \
        service["metadata"]["labels"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}


def test_the_config_is_generated_from_config_toml_so_a_change_rolls_the_pods() -> None:
    [generator] = manifest("kustomization.yaml")["configMapGenerator"]
    assert generator["name"] == "rotator-config"
    assert generator["files"] == ["config.toml"]
    assert generator.get("options", {}).get("disableNameSuffixHash") is not True
    assert not any(document["kind"] == "ConfigMap" for _, document in _all_manifests())
    assert not (KUBERNETES / "configmap.yaml").exists()
    for name in ("deployment.yaml", "cronjob.yaml"):
        text = (KUBERNETES / name).read_text()
        assert "name: rotator-config\n" in text, name
        assert "config-revision" not in text, name    # a hand-bumped stand-in, no longer needed
    load_config(KUBERNETES / "config.toml")        # valid as it ships


def _rendered(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render deploy/kubernetes"
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def _config_maps_the_pods_mount(documents: list[dict[str, Any]]) -> set[str]:
    names: set[str] = set()
    for document in documents:
        if document["kind"] not in {"Deployment", "CronJob"}:
            continue
        spec = document["spec"]
        if document["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        names |= {volume["configMap"]["name"] for volume in spec["template"]["spec"]["volumes"]
                  if volume["name"] == "config"}
    return names


def test_kubectl_kustomize_renders_and_a_config_change_renames_what_the_pods_mount(
        tmp_path: Path) -> None:
    documents = _rendered(KUBERNETES)
    kinds = [document["kind"] for document in documents]
    assert kinds.count("Namespace") == 1 and kinds.count("ServiceMonitor") == 1
    assert all(document["metadata"].get("namespace", "rotator") == "rotator"
               for document in documents)
    [config_map] = [d for d in documents if d["kind"] == "ConfigMap"]
    assert config_map["data"]["config.toml"] == (KUBERNETES / "config.toml").read_text()
    assert config_map["metadata"]["name"].startswith("rotator-config-")
    assert _config_maps_the_pods_mount(documents) == {config_map["metadata"]["name"]}

    changed = tmp_path / "kubernetes"
    shutil.copytree(KUBERNETES, changed)
    config = changed / "config.toml"
    config.write_text(config.read_text().replace('workers = 4', 'workers = 3'))
    [renamed] = _config_maps_the_pods_mount(_rendered(changed))
    assert renamed.startswith("rotator-config-") and renamed != config_map["metadata"]["name"]
