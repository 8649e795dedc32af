"""README.md's "Set it up by hand", run step for step as written.

The section's ```sh blocks are read from README.md at test time and split into commands
(a line, its ``\\``-continued lines, a here-document down to its terminator; comments and
blank lines dropped). One bash runs them in order, as a user's shell would: each
command's exit status is checked before the next is sent, and servers the README starts
with ``&`` run in that shell's background until the test ends its process group.

The only substitution: the values the README gives ``WORK``, ``EMULATOR_PORT`` and
``VAULT_PORT`` (its ports and working folder) become a tmp folder and two free ports.
Everything else, the paths to the checkout's venv included, runs unchanged from the
checkout's root. ``HOME`` is the tmp folder too, so nothing is written to the real one,
and the test's own ``VAULT_*``, ``BAO_*`` and ``ROTATOR_*`` variables are not passed on:
the section must define every one it uses.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from rotator.devtools.devvault import free_port

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Set it up by hand"
SUBSTITUTED = ("WORK", "EMULATOR_PORT", "VAULT_PORT")
MARKER = "__readme_by_hand_exit__"
COMMAND_TIMEOUT = 30.0

pytestmark = pytest.mark.integration


def section_commands(readme: str) -> list[str]:
    start = readme.index(SECTION) + len(SECTION)
    end = readme.find("\n## ", start)
    body = readme[start:end if end != -1 else None]
    commands: list[str] = []
    for block in re.findall(r"^```sh\n(.*?)^```$", body, re.S | re.M):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            i += 1
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            command = [line]
            while command[-1].endswith("\\") and i < len(lines):
                command.append(lines[i])
                i += 1
            heredoc = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", line)
            if heredoc:
                while i < len(lines) and lines[i] != heredoc.group(1):
                    command.append(lines[i])
                    i += 1
                command.append(lines[i])
                i += 1
            commands.append("\n".join(command))
    return commands


def substitute(commands: list[str], values: dict[str, str]) -> list[str]:
    found: set[str] = set()

    def value_of(match: re.Match[str]) -> str:
        found.add(match.group(1))
        return f"{match.group(1)}={values[match.group(1)]}"

    names = "|".join(SUBSTITUTED)
    out = [re.sub(rf"(?<![\w$])({names})=[^\s;&]+", value_of, c) for c in commands]
    assert found == set(SUBSTITUTED), f"README no longer assigns {set(SUBSTITUTED) - found}"
    return out


class Shell:
    """One bash reading its script from a pipe (commands get /dev/null as stdin)."""

    def __init__(self, env: dict[str, str]) -> None:
        read_end, self._script = os.pipe()
        self.process = subprocess.Popen(
            ["bash", "--noprofile", "--norc", f"/dev/fd/{read_end}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            cwd=ROOT, env=env, pass_fds=(read_end,), start_new_session=True, text=True)
        os.close(read_end)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def run(self, command: str) -> tuple[int, str]:
        os.write(self._script, f"{command}\nprintf '\\n{MARKER} %d\\n' \"$?\"\n".encode())
        output: list[str] = []
        while True:
            line = self._lines.get(timeout=COMMAND_TIMEOUT)
            if line is None:
                return -1, "".join(output)  # the shell is gone
            if line.startswith(MARKER):
                return int(line.split()[1]), "".join(output)
            output.append(line)

    def close(self) -> None:
        os.close(self._script)
        # The README's servers live in the shell's process group: end them with it
        # (SIGTERM, then SIGKILL for any that has not stopped).
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=2)
        self._reader.join(timeout=5)
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.mark.timeout(60)
def test_the_readme_set_up_by_hand_rotates_a_key(tmp_path: Path) -> None:
    commands = section_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    work = tmp_path / "work"
    commands = substitute(commands, {"WORK": str(work), "EMULATOR_PORT": str(free_port()),
                                     "VAULT_PORT": str(free_port())})
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("VAULT_", "BAO_", "ROTATOR_"))}
    env["HOME"] = str(tmp_path)
    shell = Shell(env)
    outputs: dict[str, str] = {}
    try:
        for command in commands:
            code, output = shell.run(command)
            assert code == 0, f"{command!r} exited {code}:\n{output}"
            outputs[command] = output
    finally:
        shell.close()
    status = next(out for cmd, out in outputs.items() if cmd.startswith("rotator status"))
    row = next(line for line in status.splitlines() if line.startswith("billing-export"))
    assert "completed" in row, status
    audit = next(out for cmd, out in outputs.items() if cmd.startswith("rotator audit show"))
    done = [line for line in audit.splitlines()
            if " done " in line and "completed" in line]
    assert len(done) == 1, audit
    assert "probe_revoked  refused" in audit, audit
    # The key the README put in Vault was the emulator's seeded one, and it was rotated.
    first = (work / "billing-export.key").read_text()
    assert first.startswith("cnt_") and first not in audit
