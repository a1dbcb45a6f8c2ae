"""`mpsl plan TOPOLOGY`: rank candidate plans by simulated epoch time, each with its costs and
checked by the dry run; `--out` writes the best as a plan file."""

from __future__ import annotations

import argparse

from mpsl.cli.checks import data_warnings, over_caps
from mpsl.cli.common import (
    add_format,
    add_set,
    checked,
    load_topology,
    needs_measuring,
    read_profile,
)
from mpsl.cli.output import Output
from mpsl.cli.tables import plan_report_data, plan_tables
from mpsl.plan import write_plan_file

SOLVERS = ("auto", "enum", "highs", "cbc")  # planner.ilp.SOLVERS, not imported here

NAME = "plan"
HELP = "choose cuts and micro-batches, ranked, with costs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("topology")
    p.add_argument("--profile", help="a profile CSV (else the topology's, else measured here)")
    p.add_argument("--out", help="write the best plan to this file")
    p.add_argument("--full", action="store_true",
                   help="simulate every event of every candidate (no steady-state skipping)")
    p.add_argument("--solver", choices=SOLVERS, default="auto",
                   help="cuts by enumeration (enum), HiGHS in process (highs) or CBC (cbc); "
                        "auto: enumeration up to 100,000 cut tuples, else HiGHS")
    p.add_argument("--budget", type=float, metavar="SECONDS",
                   help="simulate no further candidate once this many seconds have passed "
                        "(the ILP's first always is; the notes name those left out)")
    add_set(p)
    add_format(p)


def run(args: argparse.Namespace, out: Output) -> int:
    from planner.aps import choose_plan

    topo = load_topology(args)
    profile = read_profile(args.profile)
    if profile is None and needs_measuring(topo):
        out.note(f"profiling {topo.model.name} on this host (give --profile CSV to skip)...")
    report = choose_plan(topo, profile, steady=not args.full, solver=args.solver,
                         budget_s=args.budget)
    for i, c in enumerate(report.candidates, 1):
        checked(c.plan, f"plan #{i} ({c.source})")
    for w in data_warnings(topo):
        out.warn(w)
    for i, c in enumerate(report.candidates, 1):
        for w in over_caps(topo, c.estimate.memory_bytes, f"plan #{i} ({c.source})"):
            out.warn(w)
    if args.out:
        write_plan_file(args.out, report.best.plan)
    data = plan_report_data(report)
    data.update(out=args.out, warnings=list(out.warnings))
    out.result(data, plan_tables)
    return 0
