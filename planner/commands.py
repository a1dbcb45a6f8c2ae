"""The planner's commands: `mpsl plan`, `mpsl profile`, `mpsl simulate` (handlers for cli.py)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mpsl.plan import PlanError, make_plan
from mpsl.topology import Topology, TopologyError, load
from planner.aps import choose_plan
from planner.cost import simulate
from planner.estimate import Estimate
from planner.ilp import solve_cuts
from planner.profile import Profile, ProfileError
from planner.report import folded_lines, plan_json
from planner.resources import BYTES_PER_MB, PlanningError, host_profile, node_profiles

ERRORS = (TopologyError, ProfileError, PlanningError, PlanError, OSError)


def _err(text: str) -> None:
    Console(stderr=True).print(text, markup=False, highlight=False, soft_wrap=True)


def _load(args: argparse.Namespace, extra: list[str] | None = None) -> Topology:
    return load(args.topology, [*(getattr(args, "set", None) or ()), *(extra or ())])


def _needs_measuring(topo: Topology) -> bool:
    nodes = [o.profile for o in topo.owners] + [c.profile for c in topo.compute_nodes]
    return topo.plan.profile is None and any(p is None for p in nodes)


def cmd_plan(args: argparse.Namespace) -> int:
    """Rank plans for a topology; `--out` writes the best as a plan file."""
    console = Console(soft_wrap=args.format == "json")
    try:
        topo = _load(args)
        profiles = Profile.from_csv(args.profile) if getattr(args, "profile", None) else None
        if profiles is None and _needs_measuring(topo):
            _err(f"profiling {topo.model.name} on this host (give --profile CSV to skip)...")
        report = choose_plan(topo, profiles)
        if getattr(args, "out", None):
            Path(args.out).write_text(json.dumps(plan_json(report.best.plan), indent=2) + "\n")
    except ERRORS as err:
        _err(f"error: {err}")
        return 2
    if args.format == "json":
        console.out(json.dumps(report.to_json()), highlight=False)
    else:
        console.print(report.table())
        for note in report.notes:
            console.print(f"note: {note}", markup=False)
        if getattr(args, "out", None):
            console.print(f"wrote {args.out}", markup=False)
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    """Measure the topology's model on this host; `--out` writes the CSV."""
    console = Console()
    try:
        topo = _load(args)
        _err(f"profiling {topo.model.name} on this host (one torch thread)...")
        prof = host_profile(topo)
        if getattr(args, "out", None):
            prof.to_csv(args.out)
    except ERRORS as err:
        _err(f"error: {err}")
        return 2
    t = Table(title=f"profile of {topo.model.name} (least-squares t(b) = a + c*b, seconds; "
                    "the planner interpolates between the measured batch sizes)")
    for col in ("layer", "name", "fwd a", "fwd c", "bwd a", "bwd c", "opt", "out B/sample",
                "params B", "act B/sample"):
        t.add_column(col, justify="left" if col == "name" else "right")
    for i, lp in enumerate(prof.layers):
        t.add_row(str(i), lp.name, f"{lp.fwd_a:.2e}", f"{lp.fwd_c:.2e}", f"{lp.bwd_a:.2e}",
                  f"{lp.bwd_c:.2e}", f"{lp.opt_s:.2e}", f"{lp.out_bytes:,}",
                  f"{lp.param_bytes:,}", f"{lp.act_bytes:,}")
    console.print(t)
    console.print(f"per action: wake-up {1e3 * prof.wake_fwd_s:.3f} ms forward, "
                  f"{1e3 * prof.wake_bwd_s:.3f} ms backward; STEP {1e3 * prof.step_s:.3f} ms "
                  f"per part beyond opt, {1e3 * prof.wake_step_s:.3f} ms more after a sleep",
                  markup=False)
    if getattr(args, "out", None):
        console.print(f"wrote {args.out}", markup=False)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """Estimate the topology's plan (the ILP's cuts when it has none), optionally K owners."""
    console = Console()
    owners = getattr(args, "owners", None)
    try:
        if owners is not None and owners < 1:
            raise PlanningError(f"--owners must be >= 1, got {owners}")
        topo = _load(args, [f"data_owners.count={owners}"] if owners else None)
        if _needs_measuring(topo):
            _err(f"profiling {topo.model.name} on this host...")
        profs = node_profiles(topo)
        L = next(iter(profs.values())).num_layers
        cuts = topo.plan.cuts
        if topo.mode != "fl" and (topo.plan.auto or cuts is None):
            cuts = solve_cuts(profs, topo).cuts
        plan = make_plan(topo, L, cuts)
        started = time.perf_counter()
        est = simulate(topo, plan, profs, epochs=topo.training.epochs)
        wall = time.perf_counter() - started
    except ERRORS as err:
        _err(f"error: {err}")
        return 2
    console.print(summary_table(topo, plan.describe(), est, wall))
    return 0


def summary_table(topo: Topology, plan_text: str, est: Estimate, wall_s: float) -> Table:
    """One estimate as a two-column table, owners folded."""
    t = Table(title=f"{topo.name}: {len(topo.owners)} owner(s), mode {topo.mode}",
              show_header=False)
    t.add_column("what")
    t.add_column("value")
    procs = {r: s for r, s in est.busy_s.items() if "->" not in r}
    links = {r: s for r, s in est.busy_s.items() if "->" in r}
    rows = [
        ("plan", plan_text),
        ("iteration", f"{est.iteration_s:.4f} s (mean per owner)"),
        ("epoch", f"{est.epoch_s:.3f} s x {est.epochs} = {est.total_s:.3f} s"),
        ("bottleneck", f"{est.bottleneck} ({est.utilization(est.bottleneck):.0%} busy)"),
        ("busy s per epoch (processors)", folded_lines(procs, "{:.3f}")),
        ("busy s per epoch (links)", folded_lines(links, "{:.3f}")),
        ("memory MB", folded_lines({n: b / BYTES_PER_MB for n, b in est.memory_bytes.items()},
                             "{:.1f}")),
        ("simulated in", f"{wall_s:.2f} s"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    return t
