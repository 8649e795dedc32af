"""Each program under bench/ runs at a tiny size and prints its figures, so none rots.

The figures themselves are not judged here (a loaded CI machine says nothing about them):
each run must end with every rotation through and every figure printed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "bench"


def run(program: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(BENCH / program), *args], check=False,
                          capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    return done.stdout


def test_ratelimit_bench_runs_a_tiny_batch_through() -> None:
    out = run("ratelimit.py", "--targets", "4", "--workers", "4", "--limit", "8",
              "--window", "1")
    assert re.search(r"^management key requests\s+\d+", out, re.M), out
    assert re.search(r"^ratio took/ideal\s+(\d+\.\d+|-)", out, re.M), out
    assert re.search(r"^429s\s+\d+ \(", out, re.M), out
    assert "rotations                 completed 4, rolled back 0, failed 0" in out, out


def test_rotation_latency_bench_times_a_rotation_on_each_database() -> None:
    out = run("rotation_latency.py", "--rounds", "1")
    assert re.search(r"^  sqlite +median +\d+\.\d ms", out, re.M), out
    assert re.search(r"^  postgresql +median +\d+\.\d ms", out, re.M), out
    assert re.search(r"postgresql / sqlite median ratio: \d+\.\d\d$", out, re.M), out


def test_idle_bench_measures_two_fleets_at_rest() -> None:
    out = run("idle.py", "--targets", "20", "--small", "5", "--idle", "1", "--poll", "0.25")
    rows = re.findall(r"^ +(5|20) +\d+\.\d\d +\d+\.\d +\d+\.\d\d +(\d+) +", out, re.M)
    assert [size for size, _ in rows] == ["5", "20"], out
    assert all(int(sweeps) > 0 for _, sweeps in rows), out
    assert re.search(r"^CPU per sweep, 20 / 5 targets: (\d+\.\d\d|-)", out, re.M), out


def test_throughput_bench_compares_rotator_with_the_floor() -> None:
    out = run("throughput.py", "--targets", "3", "--concurrency", "2")
    row = re.search(r"^ +2 +(\d+\.\d) +(\d+\.\d) +(\d+\.\d\d) +(\d+\.\d) +(\d+\.\d) "
                    r"+(\d+\.\d) +(\d+\.\d) +(\d+\.\d) +(\d+\.\d)$", out, re.M)
    assert row, out
    # The floor makes the design's minimal calls: 5 to the provider, 3 to Vault.
    assert (row.group(5), row.group(7)) == ("5.0", "3.0"), out
    assert float(row.group(8)) > 0 and float(row.group(9)) > 0, out
    # The floor with rotator's calls makes as many as rotator (Vault's token lookups
    # aside): what is left between them is persistence.
    same = re.search(r"^ +2 +(\d+\.\d) +(\d+\.\d) +(\d+\.\d\d) +(\d+\.\d) +(\d+\.\d)$",
                     out.split("the floor making rotator's calls", 1)[1], re.M)
    assert same, out
    assert same.group(4) == row.group(4) == "7.0", out
    assert same.group(5) == "7.0" and float(row.group(6)) >= 7.0, out


def test_audit_bench_times_the_reads_of_a_filled_trail() -> None:
    out = run("audit.py", "--events", "2000", "--targets", "20", "--runs", "3")
    filled = re.search(r"^filled (\d+) events, (\d+) rotations, 20 targets", out, re.M)
    assert filled and int(filled.group(1)) > 1500 and int(filled.group(2)) == 200, out
    for read in ("history \\(audit show TARGET\\)", "status of one target \\(status\\)",
                 "audit_key_lifetimes, one target", "audit_current_keys, one target",
                 "audit_failed_rotations, 30 days", "audit_manual_rotations, one target"):
        assert re.search(rf"^{read} +\d+\.\d\d +\d+\.\d\d$", out, re.M), (read, out)
    assert re.search(r"^size rotation_events +\d+\.\d MiB \(indexes \d+\.\d MiB\)$", out,
                     re.M), out
    assert re.search(r"^bytes per rotation \(both tables, with indexes\) \d+$", out, re.M), out
    assert re.search(r"^plan of history \(target t0\):\n  SELECT .*\n    \S", out, re.M), out
    assert re.search(r"^seq scans: ", out, re.M), out


def test_the_readme_s_bench_commands_name_real_programs_and_options() -> None:
    """Each ``bench/`` line of the README's commands: its program exists, and every option
    it passes is one that program's ``--help`` lists (the runs above are what run them)."""
    readme = (BENCH.parent / "README.md").read_text()
    lines = [line.split("#")[0].split() for line in readme.splitlines()
             if line.startswith(".venv/bin/python bench/")]
    assert {words[1] for words in lines} == {"bench/throughput.py", "bench/ratelimit.py",
                                             "bench/idle.py", "bench/audit.py"}
    for words in lines:
        helped = run(Path(words[1]).name, "--help")
        for option in (w for w in words[2:] if w.startswith("--")):
            assert option in helped, (words[1], option)


def test_every_bench_s_db_option_reads_postgres_as_postgresql_and_refuses_others() -> None:
    probe = ("import argparse, harness; p = argparse.ArgumentParser(); "
             "harness.add_db_option(p); import sys; "
             "print(p.parse_args(sys.argv[1:]).db)")
    for given, read in (("postgres", "postgresql"), ("postgresql", "postgresql"),
                        ("sqlite", "sqlite")):
        done = subprocess.run([sys.executable, "-c", probe, "--db", given], cwd=BENCH,
                              capture_output=True, text=True, check=False, timeout=60)
        assert (done.returncode, done.stdout.strip()) == (0, read), done.stderr
    refused = subprocess.run([sys.executable, "-c", probe, "--db", "mysql"], cwd=BENCH,
                             capture_output=True, text=True, check=False, timeout=60)
    assert refused.returncode == 2 and "--db" in refused.stderr
    for program in ("throughput.py", "ratelimit.py", "idle.py"):
        assert "--db sqlite|postgresql" in run(program, "--help")
