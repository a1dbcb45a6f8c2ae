"""The `mpsl` command: one subcommand per verb; the only place where planner and nodes meet."""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from mpsl.models import build_model
from mpsl.plan import Plan, PlanError, make_plan
from mpsl.topology import MODES, Topology, TopologyError, load

console = Console()


def _overrides(args: argparse.Namespace) -> list[str]:
    items = list(args.set or [])
    mode = getattr(args, "mode", None)
    if mode:
        items.append(f"mode={mode}")
        if mode == "mpsl":
            items.append("labels=local")
    return items


def num_layers(topo: Topology) -> int:
    from mpsl.data import dataset_info

    info = dataset_info(topo.dataset.name, **topo.dataset.options)
    return len(build_model(topo.model.name, info.num_classes, info.channels, info.image_size,
                           topo.model.norm))


def resolve_plan(topo: Topology, plan_path: str | None, show: bool = True) -> Plan:
    """The plan file if given, else the topology's plan, else the planner's choice."""
    if plan_path:
        from nodes.launch import plan_from_json

        return plan_from_json(json.loads(Path(plan_path).read_text()), plan_path)
    if not topo.plan.auto or topo.mode == "fl":
        return make_plan(topo, num_layers(topo))
    from planner.aps import choose_plan

    report = choose_plan(topo)
    if show:
        console.print(report.table())
    return report.best.plan


def cmd_run(args: argparse.Namespace) -> int:
    from mpsl.report import Progress, results_tables
    from nodes.launch import LocalCluster

    overrides = _overrides(args)
    topo = load(args.topology, overrides)
    plan = resolve_plan(topo, args.plan)
    out = Path(args.out or f"runs/{topo.name}-{topo.mode}")
    console.print(f"[bold]mpsl run[/] {topo.source}: mode {topo.mode}, labels {topo.labels}, "
                  f"{len(topo.owners)} owner(s), model {topo.model.name}, "
                  f"dataset {topo.dataset.name}")
    console.print(f"plan: {plan.describe()}")
    cluster = LocalCluster(args.topology, overrides, topo, plan, out)
    with Progress(topo, plan, console, quiet=args.quiet) as progress:
        results = cluster.run(progress.on_message)
    for table in results_tables(results):
        console.print(table)
    console.print(f"results in {out}/ (results.json, results.csv, events.jsonl, model.pt)")
    return 0


def cmd_node(args: argparse.Namespace) -> int:
    from nodes.launch import run_node

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {args.name} %(message)s")
    faulthandler.register(signal.SIGTERM, chain=True)  # a stopped node shows where it was
    topo = load(args.topology, _overrides(args))
    if topo.plan.auto and not args.plan and topo.mode != "fl":
        raise PlanError(f"{topo.source}: plan is auto: run `mpsl plan {topo.source} --out "
                        f"plan.json` once and give every node --plan plan.json")
    plan = resolve_plan(topo, args.plan, show=False)
    run_node(args.role, topo, plan, args.name, args.out, args.monitor)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from mpsl.report import report_run

    for path in report_run(args.run_dir, console):
        console.print(f"wrote {path}")
    return 0


def _planner(name: str):  # noqa: ANN202 - the handler's type lives in planner.commands
    def handler(args: argparse.Namespace) -> int:
        from planner import commands

        return getattr(commands, name)(args)

    return handler


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mpsl", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def with_set(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a topology field, e.g. training.epochs=1 (repeatable)")

    r = sub.add_parser("run", help="train: one process per node on this machine")
    r.add_argument("topology")
    r.add_argument("--mode", choices=MODES)
    r.add_argument("--plan", help="a plan file from `mpsl plan --out` (else the topology's)")
    r.add_argument("--out", help="run folder (default runs/NAME-MODE)")
    r.add_argument("--quiet", action="store_true", help="no live progress")
    with_set(r)
    r.set_defaults(func=cmd_run)

    n = sub.add_parser("node", help="run a single node (deployments over several machines)")
    n.add_argument("--role", required=True, choices=("data-owner", "compute", "aggregator"))
    n.add_argument("--topology", required=True)
    n.add_argument("--name", required=True)
    n.add_argument("--plan")
    n.add_argument("--out", help="where the aggregator writes the results")
    n.add_argument("--monitor", help="address of a progress listener (set by `mpsl run`)")
    n.add_argument("--mode", choices=MODES)
    with_set(n)
    n.set_defaults(func=cmd_node)

    pl = sub.add_parser("plan", help="choose cuts and micro-batches, ranked, with costs")
    pl.add_argument("topology")
    pl.add_argument("--profile")
    pl.add_argument("--format", choices=("table", "json"), default="table")
    pl.add_argument("--out")
    with_set(pl)
    pl.set_defaults(func=_planner("cmd_plan"))

    pr = sub.add_parser("profile", help="measure a per-layer profile on this machine")
    pr.add_argument("topology")
    pr.add_argument("--out")
    with_set(pr)
    pr.set_defaults(func=_planner("cmd_profile"))

    si = sub.add_parser("simulate", help="estimate a topology's epoch with the cost model")
    si.add_argument("topology")
    si.add_argument("--owners", type=int)
    with_set(si)
    si.set_defaults(func=_planner("cmd_simulate"))

    rp = sub.add_parser("report", help="draw a run's timeline and curves as PNG")
    rp.add_argument("run_dir")
    rp.set_defaults(func=cmd_report)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (TopologyError, PlanError, FileNotFoundError, ValueError) as err:
        console.print(f"[red]error:[/] {err}", highlight=False)
        return 2
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]: every node was stopped")
        return 130
    except RuntimeError as err:  # LaunchError, NodeError
        console.print(f"[red]error:[/] {err}", highlight=False)
        return 1


if __name__ == "__main__":
    sys.exit(main())
