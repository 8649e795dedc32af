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


def test_the_readme_s_prometheus_config_loads_the_rules(tmp_path: Path) -> None:
    """The README's ``prometheus.yml`` lines, with the rules copied where they say, pass
    ``promtool check config``, which loads and checks every rule file it names."""
    readme = (RULES.parents[1] / "README.md").read_text()
    blocks = [b.split("\n", 1)[1] for b in readme.split("```yaml")[1:]]
    (snippet,) = [b.split("```", 1)[0] for b in blocks if "rule_files:" in b]
    assert "- job_name: rotator " in snippet      # the job the rules' `up` alerts name
    rules = tmp_path / "rotator-rules.yaml"
    shutil.copy(RULES / "rules.yaml", rules)
    config = tmp_path / "prometheus.yml"
    config.write_text("\n".join(line.removeprefix("  ") for line in snippet.splitlines())
                      .replace("/etc/prometheus/rotator-rules.yaml", str(rules)))
    done = _promtool("check", "config", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout + done.stderr
    assert "SUCCESS: 7 rules found" in done.stdout + done.stderr
