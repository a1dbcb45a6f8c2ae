"""The `mpsl` command: one module per subcommand, registered in COMMANDS; the only place where
planner and nodes meet.

Every command that prints results takes `--format table|json` and prints them through
`mpsl.cli.output.Output`. Every expected error ends the command with one line `error: ...` on
stderr: exit 2 for bad input (a topology, plan, profile or data set that is wrong or missing,
a plan that cannot be planned or deadlocks, a file that cannot be read), 1 for a run that
failed (a node's error), 130 for Ctrl-C, 128 + the signal for SIGTERM or SIGHUP (`mpsl run`
stops every node it started in all of these cases).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from mpsl.cli import keys, node, plan, profile, report, run, simulate
from mpsl.cli.output import Output, print_error

DESCRIPTION = ("Pipelined, multihop split learning: plan, simulate and run a topology, then "
               "report on the run.")
COMMANDS: tuple[ModuleType, ...] = (run, node, plan, profile, simulate, report, keys)
BAD_INPUT, RUN_FAILED, INTERRUPTED = 2, 1, 130
# Errors of a failed run, by module: an error of a module that was never imported cannot
# have been raised, so they are looked up in sys.modules instead of importing nodes here.
RUN_ERRORS = (("nodes.launch", "LaunchError"), ("nodes.node", "NodeError"))

__all__ = ["COMMANDS", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mpsl", description=DESCRIPTION)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in COMMANDS:
        sp = sub.add_parser(cmd.NAME, help=cmd.HELP, description=cmd.__doc__)
        cmd.add_arguments(sp)
        sp.set_defaults(command_module=cmd)
    return p


def exit_code(err: BaseException) -> int | None:
    """The exit status of an expected error; None for a bug (its traceback is shown)."""
    failed = tuple(getattr(sys.modules[m], name) for m, name in RUN_ERRORS if m in sys.modules)
    if failed and isinstance(err, failed):
        return RUN_FAILED
    if isinstance(err, (ValueError, OSError)):  # TopologyError, PlanError, ProfileError,
        return BAD_INPUT  # PlanningError, ScheduleError, DatasetNotFound, ...
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Output(getattr(args, "format", "table"))
    try:
        return int(args.command_module.run(args, out) or 0)
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", None)  # run.Stopped: SIGTERM or SIGHUP
        print(("interrupted" if signum is None else f"stopped by {err}")
              + (": every node was stopped" if args.command == "run" else ""), file=sys.stderr)
        return INTERRUPTED if signum is None else 128 + signum
    except Exception as err:
        code = exit_code(err)
        if code is None:
            raise
        print_error(err)
        return code
