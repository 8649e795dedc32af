"""The alert rules pass Prometheus's own checks: ``promtool check rules`` and the unit
tests of deploy/prometheus/rules.test.yaml (``promtool test rules``: each alert fires when
it should, with its labels and annotations, and not before)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary is not None, "needs Debian's prometheus package (.ci/run installs it)"
    return subprocess.run([binary, *args], cwd=RULES, capture_output=True, text=True,
                          timeout=120, check=False)


def test_promtool_checks_the_rules() -> None:
    done = _promtool("check", "rules", "rules.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 7 rules found" in done.stdout


def test_promtool_runs_the_rules_unit_tests() -> None:
    done = _promtool("test", "rules", "rules.test.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
