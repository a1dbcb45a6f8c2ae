"""Planner and simulator at fleet size: wall time against the number of owners.

`mpsl simulate`'s work: topologies/three_hop.yaml (vgg5, MP-SL over two compute nodes) with K
owners of 3200 samples each (100 iterations at batch 32), simulated on the fast path (steady
on: `planner.steady`'s exact periods, else `planner.rate`'s extrapolated rounds) and on every
event (steady off); the target is <= 1 s at K = 1000 with the fast path's epoch within 0.1%
of the full simulation's (column `vs_full`, where both ran). `mpsl plan`'s work: vgg19 (32x32
inputs) over three compute nodes with K owners (`choose_plan`: ILP, APS, every candidate
simulated, the lower bound), steady on and off, from a cold start of the planner (its
caches forgotten: `time_plan`); the target is <= 1 s at K = 100 (`bound_s`: the lower bound's
share, `ilp_s` the solver's, `left_out` the candidates not simulated, their cuts' bound above
the best epoch). K = 3, 10, 100, 1000, 10000; a cell whose
time, extrapolated linearly in K from the one before (from 100 owners on), exceeds `--cap`
seconds is not run (written as skipped). Timed: wall seconds (perf_counter) and this
process's CPU seconds (the machine is shared: CPU seconds show the work where load inflates
the wall time); a cell under 2 s runs 3 times, the median of each is written. The load
(1-min average) is written per cell.
The profiles are this host's (`mpsl profile`), kept in bench/results/scale.*.profile.csv.
Writes bench/results/scale.{csv,json,md,png} (`--quick`, a smoke run: simulate K = 3 and 10,
plan K = 3 on the fast path without the bound, scale.quick.*).

    .venv/bin/python -m bench.scale [--owners 3 10 100 1000 10000] [--cap 120] [--quick]
        [--results DIR] [--remeasure] [--only simulate|plan]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import harness
from bench.harness import RESULTS_DEFAULT, publish, run_meta
from mpsl.plan import make_plan
from mpsl.topology import Topology, load, parse
from planner import taskwalk
from planner.aps import choose_plan
from planner.cost import simulate
from planner.measure import measure_profile, profile_sizes
from planner.profile import Profile
from planner.resources import PlanningError, input_shape, node_profiles

ROOT = Path(__file__).resolve().parent.parent
THREE_HOP = ROOT / "topologies" / "three_hop.yaml"
SAMPLES = 3200  # per owner: 100 iterations at batch 32
Timed = tuple[tuple[float, float], dict[str, Any]]  # (wall s, CPU s), what the run found


def vgg19_fleet(owners: int) -> Topology:
    nodes = [{"name": f"node{i}", "address": f"tcp://127.0.0.1:{5690 + i}", "memory_mb": 16384}
             for i in (1, 2, 3)]
    return parse({
        "model": {"name": "vgg19", "norm": "batch"},
        "dataset": {"name": "synthetic", "options": {"size": SAMPLES * owners}},
        "training": {"epochs": 1, "batch_size": 32, "optimizer": "sgd", "momentum": 0.9},
        "mode": "mpsl", "labels": "local", "plan": "auto",
        "data_owners": {"count": owners, "base_port": 20000, "uplink_mbps": 20,
                        "downlink_mbps": 40,
                        "latency_ms": 5, "memory_mb": 1024},
        "compute_nodes": nodes, "links": {"compute_mbps": 1000, "compute_latency_ms": 1},
    }, "scale_vgg19")


def profile(topo: Topology, name: str, remeasure: bool) -> Profile:
    """This host's profile of the topology's model, measured once and kept."""
    path = RESULTS_DEFAULT / f"scale.{name}.profile.csv"
    if path.exists() and not remeasure:
        return Profile.from_csv(path)
    shape, classes = input_shape(topo)
    prof = measure_profile(topo.model.name, shape, classes, topo.model.norm,
                           profile_sizes(topo.training.batch_size), 3,
                           topo.training.optimizer, topo.training.momentum)
    prof.to_csv(path)
    return prof


class _Clock:
    """Wall and CPU seconds since it was made."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def time_simulate(owners: int, prof: Profile, steady: bool) -> Timed:
    topo = load(str(THREE_HOP), [f"data_owners.count={owners}"])
    profs = node_profiles(topo, prof)
    plan = make_plan(topo, prof.num_layers, topo.plan.cuts)
    clock = _Clock()
    est = simulate(topo, plan, profs, samples=[SAMPLES] * owners, steady=steady)
    return clock.read(), {"epoch_s": est.epoch_s, "periods": est.steady_periods}


def time_plan(owners: int, prof: Profile, steady: bool, bound: bool = True) -> Timed:
    """`choose_plan` as `mpsl plan` runs it, from a cold start of the planner: the tasks and
    dry runs kept across calls (`planner.taskwalk`) are forgotten first, so repeated runs
    redo all the work (the smallest micro-batch, a model built in torch before 2026-12-06
    23:30, is now the model's geometry, read each time)."""
    topo = vgg19_fleet(owners)
    taskwalk.forget()
    clock = _Clock()
    try:
        report = choose_plan(topo, prof, steady=steady, bound=bound)
    except PlanningError as err:  # e.g. K copies of a part past a node's memory
        return clock.read(), {"plan": f"none: {str(err).split(':')[0]}"}
    best = report.best
    return clock.read(), {"epoch_s": best.estimate.epoch_s, "periods": sum(
        c.estimate.steady_periods for c in report.candidates),
        "plan": f"{list(best.plan.cuts)} N={best.plan.micro_batches[0]} {best.plan.schedule}",
        "ilp_s": report.solve_s,
        "bound_s": report.bound.compute_s if report.bound is not None else 0.0,
        "left_out": sum("not simulated" in n for n in report.notes)}


def timed_cell(timed: Callable[[int, bool], Timed], k: int,
               steady: bool) -> dict[str, Any]:
    """One cell: wall and CPU seconds (the median of 3 runs when the first is under 2 s)."""
    walls: list[float] = []
    cpus: list[float] = []
    info: dict[str, Any] = {}
    while not walls or len(walls) < 3 and walls[0] < 2.0:
        (wall, cpu), info = timed(k, steady)
        walls.append(wall)
        cpus.append(cpu)
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus), **info,
            "load": os.getloadavg()[0]}


def sweep(what: str, owners: list[int], cap: float, timed: Callable[[int, bool], Timed],
          steadies: tuple[bool, ...] = (True, False)) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for steady in steadies:
        last: tuple[int, float] | None = None
        for k in owners:
            # fixed costs (the ILP, compiling tasks) dominate below 100 owners
            guess = None if last is None or last[0] < 100 else last[1] * k / last[0]
            row: dict[str, Any] = {"command": what, "steady": "on" if steady else "off",
                                   "owners": k}
            if guess is not None and guess > cap:
                row.update(wall_s="skipped", note=f"~{guess:.0f} s expected")
            else:
                row.update(timed_cell(timed, k, steady), note="")
                last = (k, row["wall_s"])
            rows.append(row)
            print(row, flush=True)
    full = {r["owners"]: r["epoch_s"] for r in rows if r["steady"] == "off" and "epoch_s" in r}
    for r in rows:
        if r["steady"] == "on" and r["owners"] in full and "epoch_s" in r:
            r["vs_full"] = f"{r['epoch_s'] / full[r['owners']] - 1:+.2e}"
    return rows


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.6))
    colours = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"])
    for what in ("simulate", "plan"):
        for steady in ("on", "off"):
            got = [r for r in rows if r["command"] == what and r["steady"] == steady
                   and isinstance(r["wall_s"], float)]
            if not got:
                continue
            colour = next(colours)
            style = "-" if steady == "on" else "--"
            label = f"mpsl {what}, " + ("fast path" if steady == "on" else "every event")
            ax.plot([r["owners"] for r in got], [r["wall_s"] for r in got], marker="o",
                    linestyle=style, color=colour, label=label + " (wall)")
            ax.plot([r["owners"] for r in got], [r["cpu_s"] for r in got], marker="x",
                    linestyle=style, color=colour, alpha=0.45, label=label + " (CPU)")
    ax.axhline(1.0, color="grey", linewidth=0.8, label="target 1 s")
    ax.set(xscale="log", yscale="log", xlabel="owners", ylabel="seconds",
           title="Planner and simulator time against owners (shared host: wall and CPU s)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def carried(path: Path, command: str, cols: list[str]) -> list[dict[str, Any]]:
    """The rows of `command` in an earlier run's results (`path`), noted as carried over."""
    if not path.exists():
        return []
    doc = json.loads(path.read_text())
    when = f"carried: {doc['meta']['date'][:16]} {doc['meta']['commit']}"
    return [{c: r.get(c, "") for c in cols} | {"note": f"{r.get('note') or ''} {when}".strip()}
            for r in doc["rows"] if r.get("command") == command]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--owners", type=int, nargs="+", default=[3, 10, 100, 1000, 10000])
    ap.add_argument("--cap", type=float, default=120.0, help="seconds a cell may be expected "
                    "to take (extrapolated from the one before)")
    ap.add_argument("--quick", action="store_true", help="simulate K = 3 and 10, plan K = 3 "
                    "(fast path, no bound) (scale.quick.*)")
    ap.add_argument("--remeasure", action="store_true")
    ap.add_argument("--only", choices=("simulate", "plan"), help="one of the two sweeps")
    harness.results_option(ap)
    args = ap.parse_args(argv)
    results = harness.use_results(args.results)
    plan_owners = args.owners
    if args.quick:  # a smoke run: plan's fast path without its lower bound, at K = 3 alone
        args.owners, plan_owners = [3, 10], [3]
    started = time.perf_counter()
    vgg5 = profile(load(str(THREE_HOP)), "vgg5", args.remeasure)
    vgg19 = profile(vgg19_fleet(1), "vgg19", args.remeasure)
    load0 = os.getloadavg()[0]
    rows = [] if args.only == "plan" else sweep("simulate", args.owners, args.cap,
                                                lambda k, s: time_simulate(k, vgg5, s))
    if args.only != "simulate":
        rows += sweep("plan", plan_owners, args.cap,
                      lambda k, s: time_plan(k, vgg19, s, bound=not args.quick),
                      (True,) if args.quick else (True, False))
    cols = ["command", "steady", "owners", "wall_s", "cpu_s", "epoch_s", "vs_full", "periods",
            "plan", "ilp_s", "bound_s", "left_out", "load", "note"]
    rows = [{c: r.get(c, "") for c in cols} for r in rows]
    name = "scale.quick" if args.quick else "scale"
    if args.only:  # the other sweep's rows stay as the last run wrote them
        rows += carried(results / f"{name}.json", "plan" if args.only == "simulate" else
                        "simulate", cols)
    meta = run_meta(wall_s=time.perf_counter() - started, samples_per_owner=SAMPLES,
                    cap_s=args.cap, load_at_start=load0)
    owners = " ".join(str(k) for k in args.owners)
    only = f" --only {args.only}" if args.only else ""
    publish(name, f"python -m bench.scale {'--quick' if args.quick else '--owners ' + owners}"
            f" --cap {args.cap:g}{only}", meta, [("", "wall time against owners", rows, 3)])
    plot(rows, results / f"{name}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
