"""`mpsl simulate TOPOLOGY`: the cost model's estimate of the topology's plan (the ILP's cuts
when it states none), optionally for K owners with N samples each (no data set is read then),
skipping the periods of the epoch's steady state unless `--full`."""

from __future__ import annotations

import argparse
import time

from mpsl.cli.checks import over_caps
from mpsl.cli.common import (
    add_format,
    add_set,
    checked,
    load_topology,
    needs_measuring,
    read_profile,
)
from mpsl.cli.output import Output
from mpsl.cli.tables import estimate_data, estimate_tables
from mpsl.plan import make_plan

NAME = "simulate"
HELP = "estimate a topology's epoch with the cost model"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("topology")
    p.add_argument("--owners", type=int, help="simulate K data owners (data_owners.count=K)")
    p.add_argument("--samples-per-owner", type=int, metavar="N",
                   help="every owner holds N samples (default: dataset.samples_per_owner; "
                        "neither: the data set's partition)")
    p.add_argument("--profile", help="a profile CSV (else the topology's, else measured here)")
    p.add_argument("--full", action="store_true",
                   help="simulate every event (no steady-state skipping)")
    add_set(p)
    add_format(p)


def run(args: argparse.Namespace, out: Output) -> int:
    from planner.cost import simulate
    from planner.ilp import default_round_iterations, solve_cuts
    from planner.resources import PlanningError, node_profiles

    owners = args.owners
    if owners is not None and owners < 1:
        raise PlanningError(f"--owners must be >= 1, got {owners}")
    topo = load_topology(args, [f"data_owners.count={owners}"] if owners else None)
    per_owner = args.samples_per_owner
    if per_owner is None:
        per_owner = topo.dataset.samples_per_owner
    if per_owner is not None and per_owner < 1:
        raise PlanningError(f"--samples-per-owner must be >= 1, got {per_owner}")
    samples = None if per_owner is None else [per_owner] * len(topo.owners)
    profile = read_profile(args.profile)
    if profile is None and needs_measuring(topo):
        out.note(f"profiling {topo.model.name} on this host (give --profile CSV to skip)...")
    profs = node_profiles(topo, profile)
    layers = next(iter(profs.values())).num_layers
    cuts = topo.plan.cuts
    if topo.mode != "fl" and (topo.plan.auto or cuts is None):
        rounds = None if samples is None else default_round_iterations(topo, samples)
        cuts = solve_cuts(profs, topo, round_iterations=rounds).cuts
    plan = checked(make_plan(topo, layers, cuts))
    started = time.perf_counter()
    est = simulate(topo, plan, profs, epochs=topo.training.epochs, samples=samples,
                   steady=not args.full)
    wall = time.perf_counter() - started
    for w in over_caps(topo, est.memory_bytes):
        out.warn(w)
    data = estimate_data(topo, plan, est, wall)
    data["warnings"] = list(out.warnings)
    out.result(data, estimate_tables)
    return 0
