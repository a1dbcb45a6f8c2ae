"""A local cluster: one `mpsl node` process per node on this machine, watched and stopped together.

Also the entry point of a single node (`run_node`), used by `mpsl node` on any machine.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import multiprocessing
import multiprocessing.context
import multiprocessing.process
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from mpsl.allocator import keep_freed_memory
from mpsl.names import AGGREGATOR, group_name, owner_group
from mpsl.plan import Plan, check_plan_fits, read_plan_file, write_plan_file
from mpsl.topology import Topology
from nodes.lifetime import ENV as LAUNCHER_ENV
from nodes.lifetime import exit_with
from nodes.link import Inbox
from nodes.node import NodeError
from nodes.pool import owners_per_process
from nodes.wire import Message

log = logging.getLogger(__name__)
ROLES = ("data-owner", "compute", "aggregator")
MAX_RESTARTS = 3  # per owner and run


class LaunchError(RuntimeError):
    """A node of a local run failed or went silent; every node has been stopped."""


def check_plan(plan: Plan, topo: Topology, source: str = "plan") -> None:
    """PlanError unless `plan` fits the topology and its model (layers, placement, owners, N)."""
    from mpsl.training import num_layers

    check_plan_fits(plan, topo, num_layers(topo), source)


def checkpoint_folder(topo: Topology, out: str | Path | None) -> Path:
    """Where a node keeps its checkpoints (failure.checkpoint): under the run folder."""
    return Path(out or f"runs/{topo.name}-{topo.mode}") / "checkpoints"


def run_node(role: str, topo: Topology, plan: Plan, name: str, out: str | None = None,
             monitor: str | None = None, plan_source: str = "plan",
             checkpoints: str | Path | None = None, replanner: Any = None) -> None:
    """Run one node to the end of training (imports stay local: a node loads only its role).

    The plan is checked against the topology first (PlanError naming `plan_source`).
    Checkpoints go to `checkpoints` (default: `checkpoint_folder`). `replanner`: the planner
    factory the aggregator re-plans with (nodes.replan). A data owner's `name` may be a group
    (`owner0..owner7`: nodes.pool runs them in one process).
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; valid: {', '.join(ROLES)}")
    check_plan(plan, topo, plan_source)
    keep_freed_memory()
    if role == "data-owner" and len(owner_group(name)) > 1:
        from nodes.pool import run_owners

        run_owners(topo, plan, owner_group(name))
        return
    folder = checkpoints or checkpoint_folder(topo, out)
    if role == "aggregator":
        from nodes.aggregator import Aggregator

        node: Any = Aggregator(topo, plan, out, monitor, folder, replanner)
    elif role == "compute":
        from nodes.compute import ComputeNode

        node = ComputeNode(topo, plan, name, folder)
    else:
        from nodes.data_owner import DataOwner

        node = DataOwner(topo, plan, topo.owner(name).index)
    log.info("%s: %s node listening at %s", name, role, node.inbox.address)
    finished = False
    try:
        node.run()
        finished = True
        log.info("%s: finished (%d messages dropped)", name, node.rejected_messages)
    finally:
        node.close(drain=finished)  # after an abort the peers may be gone: no wait for them


class _Popen:
    """A node started as an `mpsl node` command."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def terminate(self) -> None:
        self.popen.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> bool:
        try:
            self.popen.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def kill(self) -> None:
        self.popen.kill()
        self.popen.wait()


class _Forked:
    """A node forked from the preloaded fork server (fast: torch is imported once)."""

    def __init__(self, proc: multiprocessing.process.BaseProcess) -> None:
        self.proc = proc

    @property
    def pid(self) -> int:
        pid = self.proc.pid
        assert pid is not None, "a started process has a pid"
        return pid

    def poll(self) -> int | None:
        return self.proc.exitcode

    def terminate(self) -> None:
        self.proc.terminate()

    def wait(self, timeout: float) -> bool:
        self.proc.join(timeout)
        return self.proc.exitcode is not None

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join()


_FORKSERVER: multiprocessing.context.ForkServerContext | None = None


def _forkserver() -> multiprocessing.context.ForkServerContext:
    """A fork server that imports torch and the node modules once, before any thread starts."""
    global _FORKSERVER
    if _FORKSERVER is None:
        ctx = multiprocessing.get_context("forkserver")
        # torch._dynamo: torch.optim imports it at a node's first optimizer (2.5 s per node)
        ctx.set_forkserver_preload(["torch", "torch._dynamo", "zmq", "nodes.aggregator",
                                    "nodes.compute", "nodes.data_owner", "sklearn.datasets"])
        _FORKSERVER = ctx
    return _FORKSERVER


def _node_main(role: str, topo_path: str, overrides: list[str], plan_path: str, name: str,
               out: str | None, monitor: str, log_path: str, launcher_pid: int,
               append: bool = False, netns: str | None = None,
               replanner: Any = None) -> None:
    """The body of a forked node: output to its log, into its network namespace (`--netns`),
    then the same path as `mpsl node`."""
    mode = os.O_APPEND if append else os.O_TRUNC
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | mode, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the launcher's to handle
    faulthandler.register(signal.SIGTERM, chain=True)
    if netns is not None:
        from nodes.netns import enter

        enter(netns)  # before any socket or thread
    exit_with(launcher_pid)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name} %(message)s")
    from mpsl.topology import load

    topo = load(topo_path, overrides)
    plan = read_plan_file(plan_path)
    run_node(role, topo, plan, name, out, monitor, plan_path,
             Path(plan_path).parent / "checkpoints", replanner)


@dataclass
class _Proc:
    name: str
    role: str
    handle: _Popen | _Forked
    log_path: Path
    restarts: int = 0

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def last_line(self) -> str:
        """The log's last line (an exception's, for a node that raised), cut at 200 chars."""
        return (self.tail(1) or "(no log)")[:200]


class LocalCluster:
    """Starts every node of a topology as a process on this machine and watches them.

    `netns` (`mpsl run --netns`, nodes.netns): the network namespace of each process, by its
    name; the launcher's monitor then listens at `monitor_host`, its address on their bridge."""

    def __init__(self, topo_path: str, overrides: Sequence[str], topo: Topology, plan: Plan,
                 run_dir: str | Path, method: str = "forkserver",
                 netns: Mapping[str, str] | None = None,
                 monitor_host: str = "127.0.0.1", replanner: Any = None) -> None:
        if method not in ("forkserver", "subprocess"):
            raise ValueError(f"method must be forkserver or subprocess, not {method!r}")
        self.topo_path, self.overrides, self.topo, self.plan = topo_path, overrides, topo, plan
        self.method = method
        self.run_dir = Path(run_dir)
        self.procs: list[_Proc] = []
        self.lost: set[str] = set()  # owners that died and were not restarted
        self.monitor = ""
        self.netns, self.monitor_host = dict(netns or {}), monitor_host
        self.replanner = replanner  # the aggregator's (nodes.replan); `mpsl node` makes its own

    def _command(self, role: str, name: str, plan_path: Path, monitor: str) -> list[str]:
        cmd = [sys.executable, "-m", "mpsl.cli", "node", "--role", role, "--topology",
               self.topo_path, "--name", name, "--plan", str(plan_path), "--monitor", monitor,
               "--insecure",  # `mpsl run` checked the topology's security before any start
               "--checkpoints", str(self.run_dir / "checkpoints")]
        if role == "aggregator":
            cmd += ["--out", str(self.run_dir)]
        for item in self.overrides:
            cmd += ["--set", item]
        return cmd

    def start(self, monitor: str) -> None:
        """Start every node: forked from a preloaded server, or as `mpsl node` commands."""
        check_plan(self.plan, self.topo)
        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.run_dir / "checkpoints", ignore_errors=True)  # a new run
        write_plan_file(self.run_dir / "plan.json", self.plan)
        self.monitor = monitor
        roles = [("aggregator", AGGREGATOR)] + [("compute", c) for c in self.topo.chain]
        per = owners_per_process(self.topo)
        names = [o.name for o in self.topo.owners]
        roles += [("data-owner", group_name(names[i:i + per]))
                  for i in range(0, len(names), per)]
        for role, name in roles:
            path = logs / f"{name}.log"
            self.procs.append(_Proc(name, role, self._spawn(role, name, path), path))

    def _spawn(self, role: str, name: str, log_path: Path,
               append: bool = False) -> _Popen | _Forked:
        """Start one node, its output to `log_path` (appended to on a restart)."""
        plan_path = self.run_dir / "plan.json"
        ns = self.netns.get(name)
        if self.method == "subprocess":
            cmd = self._command(role, name, plan_path, self.monitor)
            env = dict(os.environ, PYTHONUNBUFFERED="1", **{LAUNCHER_ENV: str(os.getpid())})
            with open(log_path, "a" if append else "w") as f:
                return _Popen(subprocess.Popen(
                    ["ip", "netns", "exec", ns, *cmd] if ns else cmd, stdout=f,
                    stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL))
        out = str(self.run_dir) if role == "aggregator" else None
        proc = _forkserver().Process(
            target=_node_main, name=name, daemon=True,
            args=(role, self.topo_path, list(self.overrides), str(plan_path), name, out,
                  self.monitor, str(log_path), os.getpid(), append, ns,
                  self.replanner if role == "aggregator" else None),
        )
        proc.start()
        return _Forked(proc)

    def failed(self) -> _Proc | None:
        """A node that ended with an error and is not an owner left out of the run."""
        for p in self.procs:
            if p.name not in self.lost and p.handle.poll() not in (None, 0):
                return p
        return None

    def finished(self) -> bool:
        """The aggregator and the compute nodes ended well. The aggregator ends once every
        owner of the run sent its summary; an owner still running then is one the run ended
        without (restarted too late to rejoin): `stop` ends it."""
        return all(p.handle.poll() == 0 for p in self.procs if p.role != "data-owner")

    def on_failure(self, p: _Proc) -> None:
        """A node that died is restarted (`failure.restart`, at most MAX_RESTARTS times): a
        data owner rejoins, a compute node or the aggregator resumes from its checkpoint
        (`failure.checkpoint`). A data owner not restarted is left out: the aggregator goes on
        without it; any other node fails the run (LaunchError)."""
        code = p.handle.poll()
        over = p.role != "aggregator" and any(
            q.role == "aggregator" and q.handle.poll() is not None for q in self.procs)
        restart = self.topo.failure.restart and p.restarts < MAX_RESTARTS and not over
        if p.role != "data-owner" and not (restart and self.topo.failure.checkpoint):
            before = "".join(f"{q.name} had failed before it (exit {q.handle.poll()}; its "
                             f"log {q.log_path}): {q.last_line()}\n"
                             for q in self.procs if q.name in self.lost)
            raise LaunchError(f"node {p.name} failed (exit {code}); its log {p.log_path}:\n"
                              f"{before}{p.tail()}")
        if restart:
            p.restarts += 1
            log.warning("%s ended (exit %s): restarting it (%d of %d)", p.name, code,
                        p.restarts, MAX_RESTARTS)
            p.handle = self._spawn(p.role, p.name, p.log_path, append=True)
        else:
            log.warning("%s ended (exit %s): the run goes on without it; its log %s ends: %s",
                        p.name, code, p.log_path, p.last_line())
            self.lost.add(p.name)

    def stop(self, grace_s: float = 0.0) -> None:
        """Terminate every node still running after `grace_s`; kill those that do not stop
        in 5 s more."""
        deadline = time.monotonic() + grace_s
        for p in self.procs:
            p.handle.wait(max(0.0, deadline - time.monotonic()))
        for p in self.procs:
            if p.handle.poll() is None:
                p.handle.terminate()
        deadline = time.monotonic() + 5
        for p in self.procs:
            if not p.handle.wait(max(0.1, deadline - time.monotonic())):
                p.handle.kill()

    def run(self, on_message: Callable[[Message], None] | None = None) -> dict[str, Any]:
        """Start, relay monitor messages, and return results.json; stop everything on failure."""
        ctx = zmq.Context()
        inbox = Inbox(ctx, f"tcp://{self.monitor_host}:0", known_senders={AGGREGATOR})
        silence = self.topo.runtime.timeout_s + 30
        try:
            self.start(inbox.address)
            last = time.monotonic()
            while not self.finished():
                bad = self.failed()
                if bad is not None:
                    self.on_failure(bad)
                try:
                    msg = inbox.recv(timeout=0.2)
                except TimeoutError:
                    if time.monotonic() - last > silence:
                        raise LaunchError(f"no progress for {silence:.0f} s; logs in "
                                          f"{self.run_dir / 'logs'}") from None
                    continue
                last = time.monotonic()
                if on_message is not None:
                    on_message(msg)
            results: dict[str, Any] = json.loads((self.run_dir / "results.json").read_text())
            self.stop(grace_s=3.0)  # owners that sent their summary end by themselves
            return results
        finally:
            self.stop()
            inbox.close()
            ctx.term()


__all__ = ["LaunchError", "LocalCluster", "NodeError", "check_plan", "run_node"]
