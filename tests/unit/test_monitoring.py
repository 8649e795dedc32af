"""The shipped alert rules and dashboard name only metrics the daemon exports, and the
PrometheusRule for the operator is the rule file word for word."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from rotator.daemon.metrics import DaemonMetrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yaml"
OPERATOR_RULES = DEPLOY / "kubernetes" / "prometheusrule.yaml"
DASHBOARD = DEPLOY / "grafana" / "rotator.json"
# What Prometheus itself records about a scrape.
PROMETHEUS_OWN = {"up"}
NAME = re.compile(r"\b(rotator_[a-z0-9_]+|up)\b")


def exported() -> set[str]:
    """Every sample name the daemon's /metrics page can carry."""
    metrics = DaemonMetrics(now=lambda: datetime.now(UTC))
    names: set[str] = set()
    for line in metrics.render().decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            # (a counter's TYPE line already names it with its _total)
            suffixes = {"histogram": ["_bucket", "_sum", "_count"]}.get(kind, [""])
            names |= {name + suffix for suffix in suffixes}
    return names


def rule_exprs() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    panels: list[dict[str, Any]] = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def test_the_operator_s_rule_is_the_rule_file_word_for_word() -> None:
    operator = yaml.safe_load(OPERATOR_RULES.read_text())
    assert (operator["apiVersion"], operator["kind"]) == ("monitoring.coreos.com/v1",
                                                          "PrometheusRule")
    assert operator["spec"] == yaml.safe_load(RULES.read_text())
    kustomization = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())
    assert "prometheusrule.yaml" in kustomization["resources"]


def test_every_metric_a_rule_names_is_exported() -> None:
    known = exported() | PROMETHEUS_OWN
    for expr in rule_exprs():
        named = set(NAME.findall(expr))
        assert named, expr
        assert named <= known, (expr, named - known)


def test_the_rules_cover_failure_policy_readiness_absence_and_sweeps() -> None:
    named = {name for expr in rule_exprs() for name in NAME.findall(expr)}
    assert {"rotator_rotation_failures_total", "rotator_seconds_since_last_success",
            "rotator_key_age_seconds", "rotator_ready", "up",
            "rotator_sweep_errors_total"} <= named
    assert any("absent(" in expr for expr in rule_exprs())


def test_every_dashboard_query_names_a_metric_the_daemon_exports() -> None:
    known = exported()
    queries = dashboard_exprs()
    assert len(queries) >= 10
    for expr in queries:
        named = set(NAME.findall(expr))
        assert named, expr
        assert named <= known, (expr, named - known)


def test_the_counters_the_rules_use_start_at_zero_for_every_target() -> None:
    metrics = DaemonMetrics(now=lambda: datetime.now(UTC))
    metrics.declare_targets(["app", "billing"])
    page = metrics.render().decode()
    for target in ("app", "billing"):
        assert f'rotator_rotation_failures_total{{target="{target}"}} 0.0' in page
        assert f'rotator_rotations_completed_total{{target="{target}"}} 0.0' in page
    for kind in ("database", "internal"):
        assert f'rotator_sweep_errors_total{{kind="{kind}"}} 0.0' in page
