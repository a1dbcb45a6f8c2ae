"""`mpsl node --role ROLE --topology T --name NAME`: run one node (deployments over several
machines; `mpsl run` starts its nodes this way too)."""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import io
import logging
import signal

from mpsl.cli.checks import (
    check_bindable,
    check_devices,
    check_last_batches,
    check_node,
    security_line,
)
from mpsl.cli.common import add_mode, add_set, overrides, require_plan_file, resolve_plan
from mpsl.cli.output import Output
from mpsl.names import owner_group
from mpsl.topology import load

NAME = "node"
HELP = "run a single node (deployments over several machines)"
ROLES = ("data-owner", "compute", "aggregator")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--topology", required=True)
    p.add_argument("--name", required=True, help="the node's name; data owners may be a group, "
                   "owner0..owner7 or owner0,owner5, run in one process")
    p.add_argument("--plan", help="the plan file every node shares (needed for plan: auto)")
    p.add_argument("--out", help="where the aggregator writes the results")
    p.add_argument("--checkpoints", help="where a compute node or the aggregator keeps its "
                   "checkpoints (failure.checkpoint; default: OUT/checkpoints, else "
                   "runs/TOPOLOGY-MODE/checkpoints)")
    p.add_argument("--monitor", help="address of a progress listener (set by `mpsl run`)")
    add_mode(p)
    p.add_argument("--insecure", action="store_true",
                   help="allow addresses off this machine without security: curve")
    add_set(p)


def run(args: argparse.Namespace, out: Output) -> int:
    from nodes.launch import run_node
    from nodes.lifetime import exit_with_launcher_from_env

    exit_with_launcher_from_env()  # a node that `mpsl run` started ends with it

    topo = load(args.topology, overrides(args))
    check_node(topo, args.role, args.name)
    names = owner_group(args.name) if args.role == "data-owner" else [args.name]
    check_bindable(topo, names)
    check_devices(topo, names)
    if args.role == "data-owner":
        check_last_batches(topo)
    security = security_line(topo, args.insecure, names)
    require_plan_file(topo, args.plan)
    plan = resolve_plan(topo, args.plan)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {args.name} %(message)s")
    logging.getLogger(__name__).info("%s", security)
    with contextlib.suppress(io.UnsupportedOperation):  # stderr is no file when captured
        faulthandler.register(signal.SIGTERM, chain=True)  # a stopped node shows where it was
    replanner = None
    if args.role == "aggregator":  # re-planning with the planner (nodes.replan)
        from planner.replan import replanner_for

        replanner = replanner_for(topo)
    run_node(args.role, topo, plan, args.name, args.out, args.monitor,
             plan_source=args.plan or "the topology's plan", checkpoints=args.checkpoints,
             replanner=replanner)
    return 0
