"""Experiments run side by side, each in a forked child of `python -m bench` (`--jobs J`).

A smoke run's experiments mostly wait (emulated links and devices sleep), so running several
at once shortens the whole run; a full run keeps one at a time (`--jobs 1`, the default),
since experiments that share the CPU would spoil each other's timings.

torch is imported once, before the first fork, so that a child does not pay for it again;
nothing has run on it yet, so no thread pool is copied into a child. Each child sends its
output to `DIR/logs/NAME.log` and its outcome (run_one's dict) to `DIR/logs/NAME.json`; it
ends with SIGTERM when the runner ends by any means (PR_SET_PDEATHSIG), and the runner ends
its children on SIGTERM, SIGINT and SIGHUP. The nodes an experiment starts end with it
(`nodes.lifetime`). Each child picks its nodes' ports from its own share of the range
(`nodes.ports.ENV`): experiments side by side once picked the same free port.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from bench.experiments import QUICK_S, Experiment
from nodes import ports

Outcome = dict[str, Any]
RunOne = Callable[[Experiment, bool, Path], Outcome]
PR_SET_PDEATHSIG = 1
TAIL_LINES = 30  # of a failed experiment's log, printed by the runner


def _die_with_parent() -> None:
    """SIGTERM to this process when the process that forked it ends (Linux)."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the runner's handlers
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _child(exp: Experiment, quick: bool, results: Path, logs: Path, run_one: RunOne,
           port_share: str) -> None:
    """In the forked child: run `exp` with its output in its log, its nodes on ports of its
    own share (`nodes.ports`); never returns."""
    code = 1
    try:
        _die_with_parent()
        os.environ[ports.ENV] = port_share
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        log = os.open(logs / f"{exp.name}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(log, 1)
        os.dup2(log, 2)
        sys.stdout = sys.stderr = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        outcome = run_one(exp, quick, results)
        (logs / f"{exp.name}.json").write_text(json.dumps(outcome))
        code = 0
    except BaseException:  # noqa: BLE001 - into the log, which the runner shows on failure
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _outcome(exp: Experiment, logs: Path, status: int, seconds: float) -> Outcome:
    """What the child reported, or (it died first) a failure naming how it ended."""
    path = logs / f"{exp.name}.json"
    if path.is_file():
        outcome: Outcome = json.loads(path.read_text())
        return outcome
    how = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
           else f"exit {os.waitstatus_to_exitcode(status)}")
    return {"name": exp.name, "status": f"failed: the child ended ({how})",
            "seconds": seconds, "tables": []}


def _report(exp: Experiment, outcome: Outcome, logs: Path) -> None:
    print(f"== {exp.name}: {outcome['status']} in {outcome['seconds']:.1f} s "
          f"({outcome['cpu_s']:.1f} CPU s); tables "
          f"{', '.join(outcome['tables']) or 'none'}", flush=True)
    if outcome["status"].startswith("failed"):
        lines = (logs / f"{exp.name}.log").read_text(errors="replace").splitlines()
        print("\n".join(f"   {exp.name}| {line}" for line in lines[-TAIL_LINES:]), flush=True)


def _terminate(pids: dict[int, Any]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def run_all(chosen: list[Experiment], quick: bool, results: Path, jobs: int,
            run_one: RunOne) -> list[Outcome]:
    """Run `chosen` with at most `jobs` at a time, each in a forked child, in their order (a
    smoke run: the longest first, by `QUICK_S`; an `after_all` experiment once every other
    has ended); their outcomes in the order of `chosen`."""
    import torch  # noqa: F401 - imported once here, before the forks (see the docstring)

    logs = results / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for exp in chosen:
        (logs / f"{exp.name}.json").unlink(missing_ok=True)
    waiting = sorted(chosen, key=lambda e: (e.after_all, -QUICK_S.get(e.name, 0.0) if quick
                                            else 0.0))  # stable: else in their order
    running: dict[int, tuple[Experiment, float]] = {}
    outcomes: dict[str, Outcome] = {}

    def stop(signum: int, _frame: FrameType | None) -> None:
        _terminate(running)
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT,
                                                    signal.SIGHUP)}
    try:
        while waiting or running:
            while waiting and len(running) < jobs and (
                    not waiting[0].after_all or not running):
                exp = waiting.pop(0)
                print(f"== {exp.name}: started (log {logs / exp.name}.log)", flush=True)
                sys.stdout.flush()
                pid = os.fork()
                if pid == 0:
                    _child(exp, quick, results, logs, run_one,
                           ports.share(chosen.index(exp), len(chosen)))
                running[pid] = (exp, time.perf_counter())
            pid, status, usage = os.wait4(-1, 0)
            if pid in running:
                exp, started = running.pop(pid)
                outcomes[exp.name] = _outcome(exp, logs, status, time.perf_counter() - started)
                # the child's own CPU and that of the processes it waited for (not its nodes)
                outcomes[exp.name]["cpu_s"] = usage.ru_utime + usage.ru_stime
                _report(exp, outcomes[exp.name], logs)
    finally:
        _terminate(running)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return [outcomes[e.name] for e in chosen]
