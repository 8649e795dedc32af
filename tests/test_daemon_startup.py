"""Importing the daemon changes no library's settings; its start-up does, explicitly.

Each check runs in a fresh interpreter: the settings are process-wide, and this test
session has long since imported everything.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

PROBE = """
import logging
from prometheus_client import metrics

def settings():
    return logging.getLogger("apscheduler").level, metrics._use_created

before = settings()
import rotator.daemon.run as run
from rotator.daemon.metrics import DaemonMetrics
assert settings() == before, (settings(), before)
{start}
"""


def _run(code: str) -> None:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def test_importing_the_daemon_leaves_library_settings_alone() -> None:
    _run(PROBE.format(start="""
page = DaemonMetrics()
page.started.labels(target="app", trigger="manual").inc()
assert "rotator_rotations_started_created" in page.render().decode()
"""))


def test_start_up_quiets_apscheduler_and_drops_created_series() -> None:
    _run(PROBE.format(start="""
run.quiet_scheduler_logs()
run.drop_created_series()
assert logging.getLogger("apscheduler").level == logging.WARNING
page = DaemonMetrics()
page.started.labels(target="app", trigger="manual").inc()
assert "_created" not in page.render().decode()
"""))
