"""What the subcommands share: topology arguments, the model's size, the plan a run uses."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from mpsl.dryrun import ScheduleError, check_schedule
from mpsl.plan import Plan, PlanError, check_plan_fits, make_plan, read_plan_file
from mpsl.topology import MODES, Topology, load

if TYPE_CHECKING:
    from mpsl.cli.output import Output
    from planner.profile import Profile


def add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a topology field, e.g. training.epochs=1 (repeatable)")


def add_mode(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=MODES, help="override the topology's mode")


def add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("table", "json"), default="table",
                        help="tables for people, or one JSON object on stdout for scripts")


def overrides(args: argparse.Namespace, extra: list[str] | None = None) -> list[str]:
    """The `--set` items, then `--mode` (mode mpsl implies local labels), then `extra`."""
    items = list(getattr(args, "set", None) or [])
    mode = getattr(args, "mode", None)
    if mode:
        items.append(f"mode={mode}")
        if mode == "mpsl":
            items.append("labels=local")
    return items + list(extra or [])


def load_topology(args: argparse.Namespace, extra: list[str] | None = None) -> Topology:
    return load(args.topology, overrides(args, extra))


def read_profile(path: str | None) -> Profile | None:
    """The `--profile CSV` (ProfileError naming the file and line), or None."""
    if not path:
        return None
    from planner.profile import Profile

    return Profile.from_csv(path)


def known_host_profile(topo: Topology, profile: Profile | None) -> Profile | None:
    """This host's profile where one is at hand without measuring: `profile` (a `--profile
    CSV`), else the topology's `plan.profile`."""
    return profile if profile is not None else read_profile(topo.plan.profile)


def needs_measuring(topo: Topology) -> bool:
    """Whether planning this topology measures this host (no profile file for some node)."""
    nodes = [o.profile for o in topo.owners] + [c.profile for c in topo.compute_nodes]
    return topo.plan.profile is None and any(p is None for p in nodes)


def checked(plan: Plan, what: str = "") -> Plan:
    """`plan` once the dry run found no deadlock (ScheduleError naming the plan otherwise).

    Owners share processors but never wait for each other's messages, and a task runs to its
    end once started, so one owner per distinct N shows every deadlock the plan has (the dry
    run of 1000 owners would take seconds)."""
    distinct = plan.probe()  # one owner per distinct N (and cuts, with per-owner plans)
    probe = plan if len(distinct.micro_batches) == len(plan.micro_batches) else distinct
    try:
        check_schedule(probe)
    except ScheduleError as err:
        raise ScheduleError(f"{what or 'plan'} {plan.describe()}: {err}") from None
    return plan


def resolve_plan(topo: Topology, plan_path: str | None, out: Output | None = None,
                 profile: Profile | None = None) -> Plan:
    """The plan file if given, else the topology's plan, else the planner's choice (its ranked
    table shown on `out`); checked against the topology and by the dry run."""
    from mpsl.training import num_layers  # builds the model: torch, imported when needed

    if plan_path:
        plan = read_plan_file(plan_path)
        check_plan_fits(plan, topo, num_layers(topo), plan_path)
        return checked(plan, plan_path)
    if not topo.plan.auto or topo.mode == "fl":
        return checked(make_plan(topo, num_layers(topo)), "the topology's plan")
    from mpsl.cli.tables import plan_report_data, plan_tables
    from planner.aps import choose_plan

    if out is not None and profile is None and needs_measuring(topo):
        out.note(f"profiling {topo.model.name} on this host to plan (plan: auto)...")
    report = choose_plan(topo, profile)
    if out is not None:
        for table in plan_tables(plan_report_data(report)):
            out.console.print(table)
    return checked(report.best.plan, "the planner's plan")


def require_plan_file(topo: Topology, plan_path: str | None) -> None:
    """`mpsl node` needs the plan every node shares when the topology plans automatically."""
    if topo.plan.auto and not plan_path and topo.mode != "fl":
        raise PlanError(f"{topo.source}: plan is auto: run `mpsl plan {topo.source} --out "
                        f"plan.json` once and give every node --plan plan.json")
