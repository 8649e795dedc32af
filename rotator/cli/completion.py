"""``rotator completion bash|zsh|fish``: a shell completion script made from the parser.

The tree of commands is read from argparse itself, so a new command or flag completes
without anyone editing a script. Each shell's script walks the words typed so far the
same way: a word that names a subcommand of where it stands goes one level down.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["SHELLS", "script"]

SHELLS = ("bash", "zsh", "fish")


@dataclass(frozen=True)
class _Flag:
    names: tuple[str, ...]
    summary: str
    choices: tuple[str, ...]


@dataclass(frozen=True)
class _Level:
    """One parser of the tree: the words that lead to it, its subcommands and flags."""

    path: str
    commands: tuple[tuple[str, str], ...]
    flags: tuple[_Flag, ...]


def _levels(parser: argparse.ArgumentParser, path: str = "") -> list[_Level]:
    commands: list[tuple[str, str]] = []
    children: list[_Level] = []
    flags: list[_Flag] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            summaries = {c.dest: c.help or "" for c in action._choices_actions}
            for name, child in action.choices.items():
                commands.append((name, summaries.get(name, "")))
                children += _levels(child, f"{path} {name}".strip())
        elif action.option_strings:
            choices = tuple(str(c) for c in action.choices or ())
            # argparse's own expansion of the help text, as --help would print it.
            summary = (action.help or "").replace("%(default)s", str(action.default))
            flags.append(_Flag(tuple(action.option_strings), summary.replace("%%", "%"),
                               choices))
    return [_Level(path, tuple(commands), tuple(flags)), *children]


def _transitions(levels: list[_Level]) -> str:
    """The ``case`` patterns ("path:word") that step one level down, for bash and zsh."""
    return "|".join(f'"{level.path}:{name}"' for level in levels for name, _ in level.commands)


def _words(items: Iterable[object]) -> str:
    return " ".join(str(item) for item in items)


def _walk(levels: list[_Level], *, words: str, first: int, current: str,
          on_choices: Callable[[_Flag], str], on_level: Callable[[_Level], str]) -> str:
    """The part of bash's and zsh's function that finds where the typed words stand
    (``$cmdpath``), then what completes there: a flag's values, or commands and flags."""
    choices = "\n".join(
        f'        "{level.path}:{name}") {on_choices(flag)}; return ;;'
        for level in levels for flag in level.flags if flag.choices for name in flag.names)
    where = "\n".join(f'        "{level.path}") {on_level(level)} ;;' for level in levels)
    return f"""    local cur="${{{words}[{current}]}}" prev="${{{words}[{current}-1]}}"
    local cmdpath="" word i
    for ((i = {first}; i < {current}; i++)); do
        word="${{{words}[i]}}"
        case "$cmdpath:$word" in
            {_transitions(levels)}) cmdpath="${{cmdpath:+$cmdpath }}$word" ;;
        esac
    done
    case "$cmdpath:$prev" in
{choices}
    esac
    case "$cmdpath" in
{where}
    esac"""


def _commands(level: _Level) -> str:
    return _words(name for name, _ in level.commands)


def _flags(level: _Level) -> str:
    return _words(name for flag in level.flags for name in flag.names)


def _bash(levels: list[_Level]) -> str:
    walk = _walk(levels, words="COMP_WORDS", first=1, current="COMP_CWORD",
                 on_choices=lambda f: f'COMPREPLY=($(compgen -W "{_words(f.choices)}" '
                                      '-- "$cur"))',
                 on_level=lambda v: f'commands="{_commands(v)}"; flags="{_flags(v)}"')
    return f"""# rotator's bash completion (made by `rotator completion bash`).
_rotator() {{
    local commands="" flags=""
{walk}
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$flags" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "$commands" -- "$cur"))
    fi
}}
complete -o default -F _rotator rotator
"""


def _zsh(levels: list[_Level]) -> str:
    # The variable is cmdpath, not path: in zsh that is the array tied to $PATH.
    walk = _walk(levels, words="words", first=2, current="CURRENT",
                 on_choices=lambda f: f"compadd -- {_words(f.choices)}",
                 on_level=lambda v: f"commands=({_commands(v)}); flags=({_flags(v)})")
    return f"""#compdef rotator
# rotator's zsh completion (made by `rotator completion zsh`).
_rotator() {{
    local -a commands flags
{walk}
    if [[ "$cur" == -* ]]; then
        compadd -- "${{flags[@]}}"
    else
        compadd -- "${{commands[@]}}"
    fi
}}
if [[ "${{zsh_eval_context[-1]}}" == loadautofunc ]]; then
    _rotator "$@"
else
    compdef _rotator rotator
fi
"""


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish(levels: list[_Level]) -> str:
    steps = " ".join(_fish_quote(f"{level.path}:{name}")
                     for level in levels for name, _ in level.commands)
    lines = []
    for level in levels:
        at = _fish_quote(f"__rotator_at {_fish_quote(level.path)}")
        lines += [f"complete -c rotator -n {at} -a {_fish_quote(name)} -d {_fish_quote(help_)}"
                  for name, help_ in level.commands]
        for flag in level.flags:
            names = " ".join(f"-l {n[2:]}" if n.startswith("--") else f"-s {n[1:]}"
                             for n in flag.names)
            # -x: the value is one of these, never a file name.
            values = f" -x -a {_fish_quote(_words(flag.choices))}" if flag.choices else ""
            lines.append(f"complete -c rotator -n {at} {names}{values} "
                         f"-d {_fish_quote(flag.summary)}")
    body = "\n".join(lines)
    return f"""# rotator's fish completion (made by `rotator completion fish`).
function __rotator_path
    set -l cmdpath ''
    for word in (commandline -opc)[2..-1]
        if contains -- "$cmdpath:$word" {steps}
            set cmdpath (string trim -- "$cmdpath $word")
        end
    end
    echo "rotator:$cmdpath"
end
function __rotator_at
    test (__rotator_path) = "rotator:$argv[1]"
end
complete -c rotator -f
{body}
"""


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    """The completion script of ``shell`` (one of ``SHELLS``) for ``parser``'s tree."""
    levels = _levels(parser)
    makers = {"bash": _bash, "zsh": _zsh, "fish": _fish}
    return makers[shell](levels)
