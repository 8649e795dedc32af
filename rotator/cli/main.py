"""The ``rotator`` command line: it parses, then calls the service functions. Nothing more.

Exit codes: 0 success; 1 a rotation failed, rolled back or is still in progress (for
verify, a finding; for reconcile, a stray key left or an orphan; for cancel, a rollback
that is blocked and left to the next run); 2 bad usage or config (the message names the
key and the file); 3 the environment is not ready (database unreachable or its schema
behind, target locked by another process; for verify and reconcile, a source that could
not be read and no finding otherwise); 4 rotated, but the old key's deletion failed: it
still lives, queued for cleanup; 5 (cancel) refused, nothing changed: no rotation in
flight, or rolling it back is not safe now.
``check-config --connect``: 3 when Vault, a target's path or a provider failed its check.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from rotator import __version__
from rotator.cli.completion import SHELLS, script
from rotator.cli.examples import epilog
from rotator.cli.output import OUTPUTS, add_output_option
from rotator.config.model import Config, load_config
from rotator.core.durations import parse_duration
from rotator.core.errors import (
    ConfigError,
    LeaseHeld,
    LeaseLost,
    RotatorError,
    SchemaError,
    UsageError,
)
from rotator.core.manual_reason import MANUAL_REASON_LIMIT, check_manual_reason
from rotator.core.model import Rotation
from rotator.core.vocabulary import Trigger
from rotator.logs import configure_logging
from rotator.redaction import redact_text

if TYPE_CHECKING:
    from rotator.app.operations import TargetResult
    from rotator.app.verify import Finding

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_READY, EXIT_OLD_KEY_LIVE = 0, 1, 2, 3, 4
EXIT_REFUSED = 5

log = structlog.get_logger("rotator.cli")


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _reason(text: str) -> str:
    try:
        return check_manual_reason(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


MAX_CONCURRENCY = 64
# The config read when neither --config nor $ROTATOR_CONFIG names one.
DEFAULT_CONFIG = "rotator.toml"
CONFIG_ENV = "ROTATOR_CONFIG"


def _concurrency(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_CONCURRENCY:
        # argparse names the option: "argument --concurrency: ..."
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to "
                                         f"{MAX_CONCURRENCY}, got {text!r}")
    return value


def _moment(text: str) -> datetime:
    # Parsed with the arguments, before any runtime (and its clock) exists.
    try:
        return datetime.now(UTC) - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration ('7d') or an ISO date ('2026-11-01'), got {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _common_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    # None: neither --config nor $ROTATOR_CONFIG named one (``_config_path`` says which).
    parser.add_argument("--config", "-c", type=Path, metavar="FILE", default=default(None),
                        help=f"config file (default: ${CONFIG_ENV} or ./{DEFAULT_CONFIG})")
    parser.add_argument("--log-format", choices=["auto", "json", "console"],
                        default=default(None),
                        help="log lines on stderr as JSON or for a console (default: "
                             "[logging] format for run, else auto: console on a terminal)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                        default=default(None),
                        help="the least severe log lines shown (default: [logging] level "
                             "for run, else warning)")


class _Commands:
    """Adds a command's parser with its one-line summary, description and examples."""

    def __init__(self, sub: argparse._SubParsersAction[argparse.ArgumentParser],
                 common: argparse.ArgumentParser, prefix: str = "") -> None:
        self._sub, self._common, self._prefix = sub, common, prefix

    def add(self, name: str, summary: str, *, description: str | None = None,
            ) -> argparse.ArgumentParser:
        words = f"{self._prefix} {name}".strip()
        return self._sub.add_parser(
            name, parents=[self._common], help=summary,
            description=f"{summary[0].upper()}{summary[1:]}."
                        + (f"\n\n{description}" if description else ""),
            epilog=epilog(words), formatter_class=argparse.RawDescriptionHelpFormatter)

    def nested(self, parser: argparse.ArgumentParser, name: str) -> _Commands:
        sub = parser.add_subparsers(dest=f"{name.replace('-', '_')}_command", required=True,
                                    metavar="ACTION", help="one of:")
        return _Commands(sub, self._common, f"{self._prefix} {name}".strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rotator",
        description="Rotate SaaS service-account API keys into Vault without downtime.",
        epilog=epilog(""), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"rotator {__version__}",
                        help="print rotator's version and exit")
    _common_options(parser, defaults=True)
    # The same options after the command ("rotator run --config F"); SUPPRESS keeps a
    # command's parser from overwriting a value given before the command.
    common = argparse.ArgumentParser(add_help=False)
    _common_options(common, defaults=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="one of:")
    commands = _Commands(sub, common)

    run = commands.add("run", "the daemon: rotate on schedule; serve health and metrics")
    run.add_argument("--rotate", action="append", default=[], metavar="TARGET",
                     help="rotate this target now, then keep running (repeatable)")
    run.add_argument("--rotate-all", action="store_true", help="rotate every target now")
    run.add_argument("--once", action="store_true",
                     help="do all that is due or asked for, [daemon] workers at a time, "
                          "wait out its grace, then exit: 0, or 1 if any target did not "
                          "complete or a signal stopped it first (a Kubernetes Job or "
                          "CronJob)")
    run.set_defaults(handler=_cmd_run)

    rotate = commands.add("rotate", "rotate targets now, in the foreground")
    rotate.add_argument("targets", nargs="*", metavar="TARGET",
                        help="a target of the config's [targets] (or --all)")
    rotate.add_argument("--all", action="store_true", help="every configured target")
    rotate.add_argument("--grace", type=_duration, default=None, metavar="DURATION",
                        help="override the grace window ('0s' for a leaked key)")
    rotate.add_argument("--wait-lease", type=_duration, default=0.0, metavar="DURATION",
                        help="wait this long for another process's lease on a target")
    rotate.add_argument("--concurrency", type=_concurrency, default=1, metavar="N",
                        help=f"rotate up to N targets at a time (1 to {MAX_CONCURRENCY}; "
                             "default 1); grace windows overlap whatever N is")
    rotate.add_argument("--dry-run", action="store_true",
                        help="print what would happen; change nothing")
    add_output_option(rotate, what="one object a line: each target's plan or result as "
                                   "it comes, then a summary")
    rotate.add_argument("--reason", type=_reason, default=None, metavar="TEXT",
                        help="why: kept with the rotation for the audit (one line, at most "
                             f"{MANUAL_REASON_LIMIT} characters)")
    rotate.set_defaults(handler=_cmd_rotate)

    verify = commands.add("verify", "check the invariants: Vault, the provider and SQL agree")
    verify.add_argument("targets", nargs="*", metavar="TARGET", help="default: every target")
    add_output_option(verify, what="the findings and the targets that could not be checked")
    verify.set_defaults(handler=_cmd_verify)

    status = commands.add("status", "each target's key, age and last result")
    add_output_option(status, what="each target's keys, rotation in flight and last result")
    status.set_defaults(handler=_cmd_status)

    _add_repairs(commands)

    audit = commands.add(
        "audit", "the audit trail: show it, verify its chain, export it",
        description="`rotator audit [TARGET]` means `rotator audit show [TARGET]`; to show "
                    "a target called show, verify or export, write `rotator audit show NAME`.")
    _add_audit(commands.nested(audit, "audit"))

    db = commands.add("db", "database schema: apply or show the migrations")
    db_commands = commands.nested(db, "db")
    db_commands.add("upgrade", "apply the migrations").set_defaults(handler=_cmd_db_upgrade)
    db_commands.add("current", "show the schema revision").set_defaults(
        handler=_cmd_db_current)

    check = commands.add("check-config", "validate a config file and read the secrets it names")
    check.add_argument("file", type=Path, nargs="?", metavar="FILE",
                       help="the config to check (default: --config's)")
    check.add_argument("--connect", action="store_true",
                       help="also log in to Vault, read each target's path and probe each "
                            "provider's key; exit 3 naming what failed")
    check.set_defaults(handler=_cmd_check_config)

    from rotator.emulator import cli as emulator_cli  # noqa: PLC0415 (keeps startup light)
    emulator = commands.add("emulator", "run the Count emulator")
    emulator_cli.add_arguments(emulator)
    emulator.set_defaults(handler=emulator_cli.run)

    demo = commands.add("demo", "emulator + OpenBao + SQLite: two real rotations")
    demo.add_argument("--grace", type=_duration, default=3.0, metavar="DURATION",
                      help="the demo rotations' grace window (default: 3s)")
    demo.set_defaults(handler=_cmd_demo)

    completion = commands.add("completion", "print a shell completion script")
    completion.add_argument("shell", choices=SHELLS, metavar="SHELL",
                            help=f"the shell to complete for: {', '.join(SHELLS)}")
    completion.set_defaults(handler=_cmd_completion)
    return parser


def _add_repairs(commands: _Commands) -> None:
    """``reconcile`` and ``cancel``: what an operator runs when something is left over."""
    reconcile = commands.add(
        "reconcile", "list keys at the provider that no rotation accounts for",
        description="A key is stray when it is not the key Vault serves for any target of "
                    "its account, not in a grace window, not used by a running rotation and "
                    "not queued for cleanup. A target whose Vault key or provider keys cannot "
                    "be read is 'could not check': nothing of it is called stray or deleted.")
    reconcile.add_argument("targets", nargs="*", metavar="TARGET",
                           help="default: every target (and then the work of targets no "
                                "longer in the config is reported too)")
    reconcile.add_argument("--fix", action="store_true",
                           help="delete the stray keys, each recorded in the audit trail, "
                                "under the leases of the account's targets")
    reconcile.set_defaults(handler=_cmd_reconcile)

    cancel = commands.add(
        "cancel", "roll back a target's in-flight rotation, when that is safe",
        description="Refused (exit 5, nothing changed) once the new key is in Vault, where "
                    "consumers may already read it: let that rotation finish instead. Who "
                    "asked and why are recorded in the audit trail.")
    cancel.add_argument("target", metavar="TARGET", help="a target of the config's [targets]")
    cancel.add_argument("--reason", type=_reason, required=True, metavar="TEXT",
                        help="why: recorded in the audit trail (one line, at most "
                             f"{MANUAL_REASON_LIMIT} characters)")
    cancel.set_defaults(handler=_cmd_cancel)


# The actions of ``rotator audit``; any other word after it is a target to show.
_AUDIT_ACTIONS = frozenset({"show", "verify", "export", "-h", "--help"})
# The options before the command that take a value (skipped to find the command).
_VALUED_OPTIONS = frozenset({"--config", "-c", "--log-format", "--log-level"})


def _audit_shows_by_default(argv: Sequence[str]) -> list[str]:
    """``rotator audit [TARGET] ...`` as ``rotator audit show [TARGET] ...``."""
    args = list(argv)
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] in _VALUED_OPTIONS else 1
    if i < len(args) and args[i] == "audit" and (
            i + 1 == len(args) or args[i + 1] not in _AUDIT_ACTIONS):
        args.insert(i + 1, "show")
    return args


_SINCE_HELP = "only events since then: a duration back from now ('7d') or an ISO date"
_UNTIL_HELP = "only events until then (included): a duration back from now or an ISO date"


def _add_filters(parser: argparse.ArgumentParser) -> None:
    """The filters ``audit show`` and ``audit export`` share, after TARGET."""
    parser.add_argument("--since", type=_moment, default=None, metavar="7d|DATE",
                        help=_SINCE_HELP)
    parser.add_argument("--until", type=_moment, default=None, metavar="1d|DATE",
                        help=_UNTIL_HELP)
    parser.add_argument("--rotation", default=None, metavar="ID",
                        help="only the events of this rotation (rot_...)")
    parser.add_argument("--trigger", action="append", choices=[str(t) for t in Trigger],
                        default=[], metavar="TRIGGER",
                        help="only the rotations started so (repeatable): manual (rotator "
                             "rotate), run_rotate (run --rotate), schedule, first_rotation, "
                             "max_key_age")


def _add_audit(audit: _Commands) -> None:
    show = audit.add("show", "print the audit trail from SQL (the default)")
    show.add_argument("target", nargs="?", metavar="TARGET",
                      help="one target's events (default: every target's)")
    _add_filters(show)
    show.add_argument("--format", "-o", "--output", choices=[*OUTPUTS, "csv"],
                      default="table", dest="format",
                      help="a table for people, JSON (field names in docs/output.md) or CSV "
                           "for programs (default: table)")
    show.add_argument("--limit", type=int, default=None, metavar="N",
                      help="the N most recent events only (default: all)")
    show.set_defaults(handler=_cmd_audit)
    chain = audit.add("verify", "walk the hash chains; exit 1 on a broken link")
    chain.add_argument("target", nargs="?", metavar="TARGET",
                       help="default: every target in the database")
    chain.set_defaults(handler=_cmd_audit_verify)
    export = audit.add("export", "stream every audit row with its chain hash")
    export.add_argument("target", nargs="?", metavar="TARGET",
                        help="one target's rows (default: every target's)")
    _add_filters(export)
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl",
                        help="one JSON object a line, or CSV with a header (default: jsonl)")
    export.set_defaults(handler=_cmd_audit_export)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_audit_shows_by_default(sys.argv[1:] if argv is None else argv))
    configure_logging(args.log_format or "auto", args.log_level or "warning")
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except (ConfigError, UsageError) as exc:
        print(f"rotator: error: {redact_text(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except (SchemaError, LeaseHeld, LeaseLost) as exc:
        print(f"rotator: {redact_text(str(exc))}", file=sys.stderr)
        return EXIT_NOT_READY
    except RotatorError as exc:
        print(f"rotator: failed: {redact_text(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415 (keeps startup light)

        if not isinstance(exc, SQLAlchemyError):
            raise
        # The driver's first line only: the rest is SQL and parameters, noise here.
        cause = getattr(exc, "orig", None) or exc
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        print(f"rotator: database error: {type(cause).__name__}: {redact_text(first)}",
              file=sys.stderr)
        return EXIT_NOT_READY
    except KeyboardInterrupt:
        print("rotator: interrupted; an in-flight rotation resumes on the next run",
              file=sys.stderr)
        return 130


def _config(args: argparse.Namespace) -> Config:
    return load_config(_config_path(args.config))


def _config_path(given: Path | None) -> Path:
    """The config file to read: ``--config``, else ``$ROTATOR_CONFIG``, else the default,
    which must exist: a newcomer without one is told the two ways to name another."""
    if given is not None:
        return given
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    default = Path(DEFAULT_CONFIG)
    if not default.exists():
        raise ConfigError(f"no config file: {default.absolute()} does not exist; name one "
                          f"with --config FILE or ${CONFIG_ENV}", file=default)
    return default


def _cmd_run(args: argparse.Namespace) -> int:
    from rotator.app import operations as service  # noqa: PLC0415
    from rotator.daemon.run import RunOptions, run_daemon  # noqa: PLC0415

    config = _config(args)
    configure_logging(args.log_format or config.logging.format,
                      args.log_level or config.logging.level)
    if args.rotate_all and args.rotate:
        raise UsageError("--rotate and --rotate-all do not go together")
    names = sorted(config.targets) if args.rotate_all else list(dict.fromkeys(args.rotate))
    config.require_targets(names)
    options = RunOptions(rotate=tuple(names), once=args.once, actor=service.whoami_actor())
    return run_daemon(config, options)


def _cmd_rotate(args: argparse.Namespace) -> int:
    from rotator.app import operations as service  # noqa: PLC0415
    from rotator.app.runtime import build_runtime  # noqa: PLC0415
    from rotator.cli.answers import RotateAnswer  # noqa: PLC0415
    from rotator.cli.countdown import GraceCountdown  # noqa: PLC0415

    config = _config(args)
    countdown: GraceCountdown | None = None
    if args.all == bool(args.targets):
        raise UsageError("name one or more targets, or --all (not both)")
    names = sorted(config.targets) if args.all else list(dict.fromkeys(args.targets))
    config.require_targets(names)
    answer = RotateAnswer(args.output)
    rt = build_runtime(config)
    try:
        if args.dry_run:
            plans = service.dry_run(rt, names, args.grace)
            code = EXIT_OK if all(p.ok for p in plans) else EXIT_FAILED
            answer.plans(plans, code)
            return code
        countdown = GraceCountdown(sys.stderr) if sys.stderr.isatty() else None

        def progress(result: TargetResult) -> None:
            if countdown is not None:
                countdown.clear()
            answer.progress(result)

        results = service.rotate_targets(
            rt, names, grace=args.grace, actor=service.whoami_actor(),
            lease_wait=args.wait_lease, reason=args.reason, concurrency=args.concurrency,
            on_result=progress, on_join=_say_joined, on_wait=countdown)
    finally:
        rt.close()
        if countdown is not None:
            countdown.clear()
    code = rotate_exit_code(results)
    answer.summary(results, code)
    return code


def _say_joined(rotation: Rotation) -> None:
    from rotator.app.in_flight import describe_in_flight  # noqa: PLC0415

    print(f"rotator: {rotation.target}: joined {describe_in_flight(rotation)}, in flight "
          "when asked; its result is this command's, and no second rotation follows it",
          file=sys.stderr)


def rotate_exit_code(results: Sequence[TargetResult]) -> int:
    """The worst of a batch: a failure (1), then a target held by a live process (3),
    then a rotation done but for its old key, which still lives, queued for cleanup (4)."""
    known = {"completed": EXIT_OK, "lease_held": EXIT_NOT_READY,
             "completed_pending_cleanup": EXIT_OLD_KEY_LIVE}
    codes = {known.get(r.outcome, EXIT_FAILED) for r in results}
    for code in (EXIT_FAILED, EXIT_NOT_READY, EXIT_OLD_KEY_LIVE):
        if code in codes:
            return code
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    from rotator.app.notify import notify_stray_keys  # noqa: PLC0415
    from rotator.app.orphans import Configured, orphans  # noqa: PLC0415
    from rotator.app.runtime import build_runtime  # noqa: PLC0415
    from rotator.app.verify import (  # noqa: PLC0415
        chain_findings,
        check_targets,
        orphan_findings,
    )
    from rotator.cli import answers  # noqa: PLC0415

    config = _config(args)
    names = list(dict.fromkeys(args.targets)) or sorted(config.targets)
    config.require_targets(names)
    rt = build_runtime(config)
    try:
        findings = check_targets([rt.spec(n) for n in names], rt.providers, rt.store, rt.repo)
        findings += chain_findings(rt.repo.verify_chains, names)
        # A stray key reaches the sinks that want it (delivered by the daemon), once each.
        notify_stray_keys(rt, findings)
        if not args.targets:        # a target list narrows the check to those targets
            findings += orphan_findings(orphans(rt.repo, Configured.of(config)))
    finally:
        rt.close()
    answers.findings(findings, len(names), args.output)
    return _verify_exit(findings)


def _verify_exit(findings: Sequence[Finding]) -> int:
    """1 for a broken invariant; 3 when all that is wrong is a source that could not be
    read (nothing proven either way: fix the access and run again); 0 when clean."""
    from rotator.app.verify import FindingKind  # noqa: PLC0415

    if any(f.kind is not FindingKind.COULD_NOT_CHECK for f in findings):
        return EXIT_FAILED
    return EXIT_NOT_READY if findings else EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    from rotator.app.next_step import refusal_next_step  # noqa: PLC0415
    from rotator.app.orphans import Configured, orphans  # noqa: PLC0415
    from rotator.app.runtime import build_runtime  # noqa: PLC0415
    from rotator.app.status import status  # noqa: PLC0415
    from rotator.cli import answers  # noqa: PLC0415

    rt = build_runtime(_config(args))
    try:
        statuses = status(rt.repo, sorted(rt.config.targets),
                          advise=partial(refusal_next_step, rt.config))
        answers.status(statuses, rt.clock.now(), args.output,
                       orphans(rt.repo, Configured.of(rt.config)))
    finally:
        rt.close()
    # Like verify's findings: an old key the provider did not revoke needs an operator;
    # so does one whose deletion keeps failing, less urgently (the queue retries it).
    if any(s.revoked_alive for s in statuses):
        return EXIT_FAILED
    return EXIT_OLD_KEY_LIVE if any(s.old_key_pending for s in statuses) else EXIT_OK


def _cmd_reconcile(args: argparse.Namespace) -> int:
    from rotator.app.notify import notify_reconciled_strays  # noqa: PLC0415
    from rotator.app.operations import holder_id, whoami_actor  # noqa: PLC0415
    from rotator.app.reconcile import reconcile  # noqa: PLC0415
    from rotator.app.runtime import build_runtime  # noqa: PLC0415
    from rotator.cli import render as report  # noqa: PLC0415
    from rotator.cli.output import show  # noqa: PLC0415

    config = _config(args)
    names = list(dict.fromkeys(args.targets)) or sorted(config.targets)
    config.require_targets(names)
    rt = build_runtime(config)
    try:
        result = reconcile(rt, names, fix=args.fix, actor=whoami_actor(), holder=holder_id(),
                           with_orphans=not args.targets)
        # Each stray key reaches the sinks that want it (delivered by the daemon), once.
        notify_reconciled_strays(rt, result.strays)
        show(report.render_reconcile(result, rt.clock.now(), args.fix), sys.stdout)
    finally:
        rt.close()
    # As verify: what is wrong first (a stray key left, an orphan), then what could not
    # be read (nothing proven either way), then clean.
    if any(s.remains for s in result.strays) or result.orphans:
        return EXIT_FAILED
    return EXIT_NOT_READY if result.unchecked else EXIT_OK


def _cmd_cancel(args: argparse.Namespace) -> int:
    from rotator.app.cancel import cancel_rotation  # noqa: PLC0415
    from rotator.app.in_flight import describe_in_flight  # noqa: PLC0415
    from rotator.app.operations import whoami_actor  # noqa: PLC0415
    from rotator.app.runtime import build_runtime  # noqa: PLC0415

    config = _config(args)
    config.require_targets([args.target])
    rt = build_runtime(config)
    try:
        result = cancel_rotation(rt, args.target, actor=whoami_actor(), reason=args.reason)
    finally:
        rt.close()
    rot = result.rotation
    if result.refused is not None:
        what = "" if rot is None else f" {describe_in_flight(rot)}"
        print(f"rotator: {args.target}: not cancelled{what}: {redact_text(result.refused)}",
              file=sys.stderr)
        return EXIT_REFUSED
    assert rot is not None
    if not rot.is_terminal:
        print(f"rotator: {args.target}: rotation {rot.rotation_id} is rolling back, but the "
              f"rollback is blocked: {redact_text(rot.rollback_blocked or '')}; the next run "
              f"(or `rotator rotate {args.target}`) retries it", file=sys.stderr)
        return EXIT_FAILED
    print(f"{args.target}: rotation {rot.rotation_id} cancelled: {rot.status.value}"
          + (f" ({redact_text(rot.reason)})" if rot.reason else ""))
    return EXIT_OK


def _cmd_audit(args: argparse.Namespace) -> int:
    from rotator.app.database import open_reader  # noqa: PLC0415
    from rotator.cli import answers  # noqa: PLC0415

    config = _config(args)
    if args.target:
        config.require_targets([args.target])
    _check_window(args)
    with open_reader(config) as reader:
        events = reader.events(args.target, args.since, args.limit, until=args.until,
                               rotation_id=args.rotation, triggers=args.trigger)
    answers.events(events, args.format)
    return EXIT_OK


def _check_window(args: argparse.Namespace) -> None:
    if args.since is not None and args.until is not None and args.until < args.since:
        raise UsageError("--until is before --since: no event can be in between")


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    from rotator.app.database import verify_audit_chain  # noqa: PLC0415
    from rotator.cli import render as report  # noqa: PLC0415
    from rotator.cli.output import show  # noqa: PLC0415

    report_ = verify_audit_chain(_config(args), args.target)
    show(report.render_chain_report(report_), sys.stdout)
    return EXIT_FAILED if report_.breaks else EXIT_OK


def _cmd_audit_export(args: argparse.Namespace) -> int:
    from rotator.app.database import export_events  # noqa: PLC0415
    from rotator.cli import render as report  # noqa: PLC0415

    config = _config(args)
    if args.target:
        config.require_targets([args.target])
    _check_window(args)
    rows = export_events(config, args.target, args.since, until=args.until,
                         rotation_id=args.rotation, triggers=args.trigger)
    for line in report.export_lines(rows, args.format):
        sys.stdout.write(line)
    return EXIT_OK


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    from rotator.app.database import upgrade_schema  # noqa: PLC0415

    revision = upgrade_schema(_config(args))
    print(f"database schema at {revision}")
    return EXIT_OK


def _cmd_db_current(args: argparse.Namespace) -> int:
    from rotator.app.database import schema_revisions  # noqa: PLC0415

    current, head = schema_revisions(_config(args))
    print(f"database schema at {current or 'none'}; this rotator needs {head}")
    return EXIT_OK if current == head else EXIT_NOT_READY


def _cmd_check_config(args: argparse.Namespace) -> int:
    from rotator.app.database import chain_key, database_password  # noqa: PLC0415
    from rotator.app.notify import sink_secrets  # noqa: PLC0415
    from rotator.app.runtime import management_keys, vault_auth  # noqa: PLC0415

    path = args.file or _config_path(args.config)
    config = load_config(path)
    problems: dict[str, str] = {}
    for check in (database_password, management_keys, vault_auth, chain_key, sink_secrets):
        try:
            check(config)
        except ConfigError as exc:
            problems[exc.context.get("key", "secret")] = exc.message
    if problems:
        raise ConfigError(f"{path}: secrets named by the config cannot be read", problems,
                          file=path)
    print(f"{path}: ok ({len(config.targets)} target(s), {len(config.providers)} provider(s))")
    if not args.connect:
        return EXIT_OK
    from rotator.app.connect import check_connections  # noqa: PLC0415

    checks = check_connections(config)
    for c in checks:
        print(f"{'ok' if c.ok else 'FAILED':6}  {c.subject}: {redact_text(c.detail)}")
    failed = sum(not c.ok for c in checks)
    if failed:
        print(f"{failed} of {len(checks)} check(s) failed", file=sys.stderr)
        return EXIT_NOT_READY
    return EXIT_OK


def _cmd_completion(args: argparse.Namespace) -> int:
    sys.stdout.write(script(args.shell, build_parser()))
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from rotator.devtools.demo import run_demo  # noqa: PLC0415

    return run_demo(grace=args.grace)


if __name__ == "__main__":
    sys.exit(main())
