"""One CLI shape: the command table, `python -m mpsl.cli`, exit codes, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

import mpsl.cli
from mpsl.cli import COMMANDS, build_parser, exit_code
from mpsl.cli.output import one_line
from tests.mpsl.cli.conftest import LONG

FORMATTED = {"run", "plan", "profile", "simulate", "report", "keys"}


def test_every_command_registered_once_with_format_where_it_prints_results():
    assert [c.NAME for c in COMMANDS] == ["run", "node", "plan", "profile", "simulate",
                                          "report", "keys"]
    parser = build_parser()
    for cmd in COMMANDS:
        sub = parser._subparsers._group_actions[0].choices[cmd.NAME]  # type: ignore[union-attr]
        options = {o for a in sub._actions for o in a.option_strings}
        assert ("--format" in options) == (cmd.NAME in FORMATTED), cmd.NAME
    for name in ("plan", "simulate", "report", "run"):
        assert "--profile" in {o for a in parser._subparsers._group_actions[0]  # type: ignore
                               .choices[name]._actions for o in a.option_strings}


def test_python_m_mpsl_cli_runs_main():
    done = subprocess.run([sys.executable, "-m", "mpsl.cli", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "simulate" in done.stdout and "report" in done.stdout


@pytest.mark.parametrize("args", [
    ("run", "{missing}"), ("plan", "{missing}"), ("profile", "{missing}"),
    ("simulate", "{missing}"),
    ("node", "--role", "compute", "--topology", "{missing}", "--name", "server"),
    ("report", "{folder}"),
])
def test_a_long_error_is_one_line_on_stderr(cli, tmp_path, args):
    folder = tmp_path / LONG
    folder.mkdir(parents=True)
    missing = str(folder / "no-such-topology.yaml")
    line = cli.error(*(a.format(missing=missing, folder=folder) for a in args))
    assert len(line) > 160
    assert (str(folder) + ": no results.json" if args[0] == "report" else missing) in line


def test_exit_codes(monkeypatch, cli, tmp_path):
    from planner.profile import ProfileError

    assert exit_code(ProfileError("x")) == 2 and exit_code(FileNotFoundError("x")) == 2
    assert exit_code(ZeroDivisionError()) is None  # a bug keeps its traceback

    def interrupted(args, out):
        raise KeyboardInterrupt

    monkeypatch.setattr(mpsl.cli.plan, "run", interrupted)
    rc, out, err = cli("plan", "t.yaml")
    assert rc == 130 and err == "interrupted\n" and out == ""


def test_one_line():
    assert one_line("a\n  b\n\nc  ") == "a ... c"
    assert one_line("plain") == "plain"
    assert one_line(KeyError()) == "KeyError"
