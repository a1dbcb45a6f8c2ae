"""`mpsl run TOPOLOGY`: train on this machine, one process per node, with live progress."""

from __future__ import annotations

import argparse
import signal
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import RenderableType

from mpsl.cli.checks import (
    check_bindable,
    check_devices,
    check_last_batches,
    data_warnings,
    host_load_line,
    memory_warnings,
    security_line,
)
from mpsl.cli.common import (
    add_format,
    add_mode,
    add_set,
    known_host_profile,
    load_topology,
    needs_measuring,
    overrides,
    read_profile,
    resolve_plan,
)
from mpsl.cli.output import Output
from mpsl.topology import Topology

if TYPE_CHECKING:
    from nodes.netns import Capabilities
    from planner.profile import Profile

NAME = "run"
HELP = "train: one process per node on this machine"
SUMMARY_KEYS = ("epochs", "nodes", "links", "summary")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
Network = tuple[list[str], Topology, dict[str, str], str]  # what `network` yields


class Stopped(KeyboardInterrupt):
    """`mpsl run` got SIGTERM or SIGHUP: it stops every node, as for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def stopping_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into `Stopped` (once: a second signal during the stop is
    ignored, so that the stop finishes)."""

    def stop(signum: int, frame: object) -> None:
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        raise Stopped(signum)

    old = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("topology")
    add_mode(p)
    p.add_argument("--plan", help="a plan file from `mpsl plan --out` (else the topology's)")
    p.add_argument("--profile", help="profile CSV for `plan: auto` (else the topology's, "
                                     "else measured on this host)")
    p.add_argument("--out", help="run folder (default runs/NAME-MODE)")
    p.add_argument("--quiet", action="store_true", help="no live progress bars")
    p.add_argument("--insecure", action="store_true",
                   help="allow addresses off this machine without security: curve")
    p.add_argument("--netns", action="store_true",
                   help="each node in a network namespace of its own, its links shaped by "
                        "the kernel (tc) instead of the process; needs root and iproute2")
    add_set(p)
    add_format(p)


def run(args: argparse.Namespace, out: Output) -> int:
    from mpsl.report import Progress
    from nodes.launch import LocalCluster
    from planner.replan import replanner_for

    topo = load_topology(args)
    security = security_line(topo, args.insecure)
    caps = netns_capabilities(topo) if args.netns else None
    if caps is None:
        check_bindable(topo, topo.node_names())
    check_devices(topo, topo.chain)
    check_last_batches(topo)
    profile = this_host(args, topo, out)
    plan = resolve_plan(topo, args.plan, out, profile)
    for w in data_warnings(topo) + memory_warnings(topo, plan):
        out.warn(w)
    load = None if profile is None else host_load_line(topo, plan, profile)
    run_dir = Path(args.out or f"runs/{topo.name}-{topo.mode}")
    out.info(f"mpsl run {topo.source}: mode {topo.mode}, labels {topo.labels}, "
             f"{len(topo.owners)} owner(s), model {topo.model.name}, "
             f"dataset {topo.dataset.name}")
    out.info(f"plan: {plan.describe()}")
    if load is not None:
        text, host_bound = load
        if host_bound:
            out.warn(text)
        else:
            out.info(text)
    out.info(security)
    with stopping_on_signals(), network(args, topo, caps, run_dir, out) as net:
        sets, nodes_topo, ns, host = net
        cluster = LocalCluster(args.topology, sets, nodes_topo, plan, run_dir, netns=ns,
                               monitor_host=host, replanner=replanner_for(topo))
        with Progress(topo, out.console, quiet=args.quiet) as progress:
            results = cluster.run(progress.on_message)
    out.result(run_data(run_dir, results, out.warnings), render)
    return 0


def this_host(args: argparse.Namespace, topo: Topology, out: Output) -> Profile | None:
    """This host's profile: `--profile`, the topology's `plan.profile`, or measured here
    where the planner needs it (`plan: auto`, no plan file) and would measure it anyway;
    None where the run needs none."""
    host = known_host_profile(topo, read_profile(args.profile))
    plans = not args.plan and topo.plan.auto and topo.mode != "fl"
    if host is None and plans and needs_measuring(topo):
        from planner.resources import host_profile

        out.note(f"profiling {topo.model.name} on this host to plan (plan: auto)...")
        host = host_profile(topo)
    return host


def netns_capabilities(topo: Topology) -> Capabilities:
    """What this machine allows for `--netns`, probed before any node starts: NetnsError (one
    line) where namespaces or tc are not allowed, or `topo` re-plans."""
    from nodes.netns import NetnsError, probe, refuse_replan

    refuse_replan(topo)
    caps = probe()
    if caps.reason is not None:
        raise NetnsError(caps.reason)
    return caps


@contextmanager
def network(args: argparse.Namespace, topo: Topology, caps: Capabilities | None,
            run_dir: Path, out: Output) -> Iterator[Network]:
    """The nodes' `--set` assignments and topology, their namespaces and the monitor's host:
    the user's own on loopback, or (`--netns`) those of the run's namespaces, which are
    removed on any exit."""
    if caps is None:
        yield overrides(args), topo, {}, "127.0.0.1"
        return
    from nodes.netns import netns_run

    with netns_run(args.topology, overrides(args), topo, caps, run_dir) as nr:
        out.info(nr.net.describe())
        yield nr.overrides, nr.topology, nr.net.namespaces, nr.net.host_ip


def run_data(run_dir: Path, results: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    """`mpsl run --format json`: the run folder, the plan, and results.json's epochs, nodes,
    links and summary."""
    data: dict[str, Any] = {"run_dir": str(run_dir), "plan": results.get("plan"),
                            "warnings": list(warnings)}
    data.update({k: results.get(k) for k in SUMMARY_KEYS})
    return data


def render(data: Mapping[str, Any]) -> list[RenderableType]:
    from mpsl.report import results_tables

    return [*results_tables(data), f"results in {data['run_dir']}/ (results.json, results.csv, "
                                   f"events.jsonl, plan.json, model.pt, logs/)"]
