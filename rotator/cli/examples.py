"""The "examples:" block at the foot of each command's ``--help``: real invocations.

Keyed by the command's words after ``rotator`` (``""`` is ``rotator`` itself); a test
walks the parser tree and fails on a command that has none.
"""

from __future__ import annotations

__all__ = ["EXAMPLES", "epilog"]

EXAMPLES: dict[str, tuple[str, ...]] = {
    "": (
        "rotator check-config rotator.toml",
        "rotator rotate billing-export --dry-run",
        "rotator --config /etc/rotator/rotator.toml status",
        "rotator run",
    ),
    "run": (
        "rotator run --config /etc/rotator/rotator.toml",
        "rotator run --once",
        "rotator run --rotate billing-export --log-format json",
    ),
    "rotate": (
        "rotator rotate billing-export --dry-run",
        "rotator rotate billing-export --grace 0s --reason 'key leaked in CI logs'",
        "rotator rotate --all --concurrency 4 --wait-lease 5m",
        "rotator rotate --all --dry-run -o json | jq -c 'select(.type == \"plan\")'",
    ),
    "verify": (
        "rotator verify",
        "rotator verify billing-export ci-deployer",
        "rotator verify -o json | jq -r '.findings[].kind'",
    ),
    "status": (
        "rotator status",
        "rotator --config prod.toml status",
        "rotator status -o json | jq '.targets[] | {target, key_age_seconds}'",
    ),
    "reconcile": (
        "rotator reconcile",
        "rotator reconcile billing-export --fix",
    ),
    "cancel": (
        "rotator cancel billing-export --reason 'provider outage; retry tomorrow'",
        "rotator --config prod.toml cancel ci-deployer --reason 'wrong service account'",
    ),
    "audit": (
        "rotator audit billing-export --since 7d",
        "rotator audit verify",
        "rotator audit export --format csv > audit.csv",
    ),
    "audit show": (
        "rotator audit show --since 7d",
        "rotator audit show billing-export --format json --limit 20",
        "rotator audit show --rotation rot_20261202T101500_3fa9c1 -o json",
        "rotator audit show --trigger manual --trigger run_rotate --since 2026-11-01 "
        "--until 2026-12-01",
    ),
    "audit verify": (
        "rotator audit verify",
        "rotator audit verify billing-export",
    ),
    "audit export": (
        "rotator audit export > audit.jsonl",
        "rotator audit export billing-export --since 2026-11-01 --format csv",
        "rotator audit export --trigger schedule --until 1d > scheduled.jsonl",
    ),
    "db": (
        "rotator db upgrade",
        "rotator db current",
    ),
    "db upgrade": (
        "rotator db upgrade",
        "rotator --config prod.toml db upgrade",
    ),
    "db current": (
        "rotator db current",
        "rotator --config prod.toml db current",
    ),
    "check-config": (
        "rotator check-config",
        "rotator check-config deploy/rotator.toml",
        "rotator check-config --connect",
    ),
    "emulator": (
        "rotator emulator",
        "rotator emulator --port 0 --seed 1",
        "rotator emulator --layout alt --seed 1",
        "rotator emulator --error-rate 0.1 --latency 0.2 --rate-limit 30",
    ),
    "demo": (
        "rotator demo",
        "rotator demo --grace 10s",
    ),
    "completion": (
        "rotator completion bash > ~/.local/share/bash-completion/completions/rotator",
        "rotator completion zsh > \"${fpath[1]}/_rotator\"",
        "rotator completion fish > ~/.config/fish/completions/rotator.fish",
    ),
}


def epilog(command: str) -> str:
    """The "examples:" block of ``command`` (``KeyError`` if it has none: a test's job)."""
    return "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[command])
