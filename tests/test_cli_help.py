"""Every command's ``--help`` explains itself: a summary, a description, help on every
option and positional, and an "examples:" block; a future flag without help fails here."""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterator

import pytest

from rotator.cli.examples import EXAMPLES
from rotator.cli.main import _audit_shows_by_default, build_parser


def _parsers(parser: argparse.ArgumentParser, words: str = ""
             ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every parser of the tree with its command's words after ``rotator``."""
    yield words, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, f"{words} {name}".strip())


def _subcommand_lists(parser: argparse.ArgumentParser
                      ) -> Iterator[argparse._SubParsersAction[argparse.ArgumentParser]]:
    yield from (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def test_the_walk_reaches_every_command() -> None:
    words = {name for name, _ in _parsers(build_parser())}
    assert {"", "run", "rotate", "verify", "status", "audit", "audit show", "audit verify",
            "audit export", "db", "db upgrade", "db current", "check-config", "emulator",
            "demo"} <= words
    # No examples left over for a command that does not exist.
    assert set(EXAMPLES) == words


def test_every_option_and_positional_has_help() -> None:
    missing = [f"rotator {words} {action.dest}".replace("  ", " ")
               for words, parser in _parsers(build_parser())
               for action in parser._actions
               if not action.help or action.help == argparse.SUPPRESS]
    assert missing == []


def test_every_command_has_a_summary_a_description_and_examples() -> None:
    problems: list[str] = []
    for words, parser in _parsers(build_parser()):
        name = f"rotator {words}".strip()
        if not parser.description:
            problems.append(f"{name}: no description")
        epilog = parser.epilog or ""
        examples = [line.strip() for line in epilog.split("examples:\n", 1)[-1].splitlines()]
        if not epilog.startswith("examples:\n") or not 2 <= len(examples) <= 4:
            problems.append(f"{name}: no examples: block of 2-4 invocations")
        elif not all(line.startswith(f"{name} ") or line.startswith("rotator ")
                     for line in examples):
            problems.append(f"{name}: an example that is not a rotator command")
        if parser.formatter_class is not argparse.RawDescriptionHelpFormatter:
            problems.append(f"{name}: the examples would be re-wrapped")
        for listing in _subcommand_lists(parser):
            problems += [f"{name} {choice.dest}: no one-line summary"
                         for choice in listing._choices_actions if not choice.help]
    assert problems == []


def test_every_example_parses_as_its_own_command() -> None:
    parser = build_parser()
    for words, lines in EXAMPLES.items():
        for line in lines:
            # The command alone: before a redirection or a pipe (`| jq ...`).
            argv = shlex.split(re.split(r" [>|] ", line, maxsplit=1)[0])[1:]
            args = parser.parse_args(_audit_shows_by_default(argv))
            said = [args.command, getattr(args, "audit_command", None),
                    getattr(args, "db_command", None)]
            said_words = " ".join(w for w in said if w)
            # A group's examples may show its subcommands ("audit" shows "audit verify").
            assert f"{said_words} ".startswith(f"{words} ".lstrip()), line


def test_help_prints_the_examples(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    try:
        parser.parse_args(["audit", "show", "--help"])
    except SystemExit as stop:
        assert stop.code == 0
    out = capsys.readouterr().out
    assert "examples:\n  rotator audit show --since 7d\n" in out
    assert "--limit N             the N most recent events only" in out
