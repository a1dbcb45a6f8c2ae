"""A node started by `mpsl run` ends when `mpsl run` does, however it ended.

`mpsl run` stops its nodes itself on a normal end, a failure, Ctrl-C, SIGTERM or SIGHUP; this
covers the rest (SIGKILL, the OOM killer, a crash): a watchdog thread in every node it started
checks that the launcher's process still runs, and sends the node SIGTERM once it does not.
(A forked node's parent is the fork server, which outlives the launcher while nodes remain, so
the launcher is watched by its pid, not through the parent.)
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "MPSL_LAUNCHER_PID"  # set by `mpsl run` for the `mpsl node` commands it starts
WATCH_PERIOD_S = 0.5


def exit_with(launcher_pid: int) -> None:
    """End this process with SIGTERM within `WATCH_PERIOD_S` of `launcher_pid` ending."""
    threading.Thread(target=_watch, args=(launcher_pid,), name="exit-with-launcher",
                     daemon=True).start()


def exit_with_launcher_from_env() -> None:
    """`exit_with` the pid that `mpsl run` put in the environment, if any."""
    value = os.environ.get(ENV, "")
    if value.isdigit():
        exit_with(int(value))


def running(pid: int) -> bool:
    """Whether process `pid` exists and has not ended (a zombie not yet reaped has ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc here: os.kill's answer stands
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _watch(launcher_pid: int) -> None:
    tick = threading.Event()
    while running(launcher_pid):
        tick.wait(WATCH_PERIOD_S)
    log.warning("launcher process %d has ended: stopping", launcher_pid)
    os.kill(os.getpid(), signal.SIGTERM)
