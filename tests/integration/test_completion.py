"""``rotator completion SHELL``, through the real command; bash's script is sourced in a
real bash and its completion function driven as bash would drive it on TAB."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _rotator(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rotator", *args], capture_output=True,
                          text=True, timeout=30, check=False)


@pytest.fixture(scope="module")
def bash_script() -> str:
    result = _rotator("completion", "bash")
    assert result.returncode == 0, result.stderr
    return result.stdout


def _complete(script: str, *words: str) -> list[str]:
    """COMPREPLY of bash's completion of ``words`` (the last is the one being typed)."""
    words_array = " ".join(f"'{w}'" for w in words)
    program = (f'{script}\ncomplete -p rotator\nCOMP_WORDS=({words_array}); '
               f'COMP_CWORD={len(words) - 1}; _rotator; printf "%s\\n" "${{COMPREPLY[@]}}"')
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", program],
                          capture_output=True, text=True, timeout=30, check=True)
    first, *replies = done.stdout.splitlines()
    assert first == "complete -o default -F _rotator rotator"   # `complete -p rotator`
    return [reply for reply in replies if reply]


def test_bash_completes_commands(bash_script: str) -> None:
    assert _complete(bash_script, "rotator", "ro") == ["rotate"]
    assert set(_complete(bash_script, "rotator", "")) >= {
        "run", "rotate", "verify", "status", "audit", "db", "check-config", "completion"}


def test_bash_completes_subcommands_and_their_flags(bash_script: str) -> None:
    assert _complete(bash_script, "rotator", "audit", "") == ["show", "verify", "export"]
    assert _complete(bash_script, "rotator", "--config", "x.toml", "db", "u") == ["upgrade"]
    assert set(_complete(bash_script, "rotator", "rotate", "--")) >= {
        "--all", "--grace", "--dry-run", "--concurrency", "--reason", "--config"}
    assert _complete(bash_script, "rotator", "audit", "show", "--format", "") == [
        "table", "json", "csv"]
    assert "--limit" not in _complete(bash_script, "rotator", "audit", "export", "--")


def test_bash_completes_the_output_and_audit_filter_flags(bash_script: str) -> None:
    for command in ("status", "verify", "rotate"):
        assert {"-o", "--output"} <= set(_complete(bash_script, "rotator", command, "-"))
        assert _complete(bash_script, "rotator", command, "-o", "") == ["table", "json"]
    assert _complete(bash_script, "rotator", "audit", "show", "--output", "") == [
        "table", "json", "csv"]
    assert {"--until", "--rotation", "--trigger"} <= set(
        _complete(bash_script, "rotator", "audit", "export", "--"))
    assert _complete(bash_script, "rotator", "audit", "show", "--trigger", "") == [
        "manual", "run_rotate", "schedule", "first_rotation", "max_key_age"]


def test_a_shell_it_does_not_know_is_a_usage_error() -> None:
    result = _rotator("completion", "ksh")
    assert result.returncode == 2
    assert "invalid choice: 'ksh'" in result.stderr and "'fish'" in result.stderr
    assert result.stdout == ""


def test_zsh_script() -> None:
    result = _rotator("completion", "zsh")
    assert result.returncode == 0, result.stderr
    script = result.stdout
    assert script.startswith("#compdef rotator\n")
    assert "compdef _rotator rotator" in script
    assert '"audit:show"' in script and '"audit show:--format") compadd -- table json csv' \
        in script
    zsh = shutil.which("zsh")
    # No zsh on this machine is no reason to skip: its script's structure is checked
    # above; with zsh, it must also parse.
    if zsh:
        subprocess.run([zsh, "-n", "-c", script], check=True, timeout=30)
    else:
        assert not os.environ.get("CI"), ".ci/run installs zsh"


def test_fish_script() -> None:
    result = _rotator("completion", "fish")
    assert result.returncode == 0, result.stderr
    script = result.stdout
    assert "complete -c rotator -f\n" in script
    assert ("complete -c rotator -n '__rotator_at \\'\\'' -a 'rotate' "
            "-d 'rotate targets now, in the foreground'") in script
    assert "complete -c rotator -n '__rotator_at \\'audit show\\'' -l format -s o " \
           "-l output -x -a 'table json csv'" in script
    fish = shutil.which("fish")
    # As for zsh: without fish, the structure above is what is checked.
    if fish:
        subprocess.run([fish, "--no-execute", "-c", script], check=True, timeout=30)
    else:
        assert not os.environ.get("CI"), ".ci/run installs fish"


def test_fish_completes_as_on_tab(tmp_path: Path) -> None:
    """The script sourced in a real fish, asked what TAB offers (``complete -C``)."""
    fish = shutil.which("fish")
    if fish is None:
        assert not os.environ.get("CI"), ".ci/run installs fish"
        return
    script = tmp_path / "rotator.fish"
    script.write_text(_rotator("completion", "fish").stdout)

    def offers(line: str) -> list[str]:
        done = subprocess.run([fish, "--no-config", "-c", f"source {script}; complete -C '{line}'"],
                              capture_output=True, text=True, timeout=30, check=True)
        return [row.split("\t")[0] for row in done.stdout.splitlines()]

    assert offers("rotator sta") == ["status"]
    assert offers("rotator audit show --tr") == ["--trigger"]
    assert offers("rotator audit show --format ") == ["csv", "json", "table"]
