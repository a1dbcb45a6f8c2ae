"""Planner and simulator at fleet size: wall time against the number of owners.

`mpsl simulate`'s work: topologies/three_hop.yaml (vgg5, MP-SL over two compute nodes) with K
owners of 3200 samples each (100 iterations at batch 32), simulated with the steady state on
(`planner.steady`: whole periods skipped once the state repeats) and off (every event); the
target is <= 1 s at K = 1000. `mpsl plan`'s work: vgg19 (32x32 inputs) over three compute nodes
with K owners (`choose_plan`, ILP and APS, every candidate simulated), steady state on and off;
the target is <= 1 s at K = 100. K = 3 (where the state repeats), 10, 100, 1000, 10000; a
cell whose time, extrapolated linearly in K from the one before (from 100 owners on), exceeds
`--cap` seconds is not run (written as skipped).
The profiles are this host's (`mpsl profile`), kept in bench/results/scale.*.profile.csv.
Writes bench/results/scale.{csv,json,md,png}.

    .venv/bin/python -m bench.scale [--owners 10 100 1000 10000] [--cap 120] [--remeasure]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import RESULTS, publish, run_meta
from mpsl.plan import make_plan
from mpsl.topology import Topology, load, parse
from planner.aps import choose_plan
from planner.cost import simulate
from planner.measure import measure_profile, profile_sizes
from planner.profile import Profile
from planner.resources import input_shape, node_profiles

ROOT = Path(__file__).resolve().parent.parent
THREE_HOP = ROOT / "topologies" / "three_hop.yaml"
SAMPLES = 3200  # per owner: 100 iterations at batch 32


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
    path = RESULTS / f"scale.{name}.profile.csv"
    if path.exists() and not remeasure:
        return Profile.from_csv(path)
    shape, classes = input_shape(topo)
    prof = measure_profile(topo.model.name, shape, classes, topo.model.norm,
                           profile_sizes(topo.training.batch_size), 3,
                           topo.training.optimizer, topo.training.momentum)
    RESULTS.mkdir(parents=True, exist_ok=True)
    prof.to_csv(path)
    return prof


def time_simulate(owners: int, prof: Profile, steady: bool) -> tuple[float, dict[str, Any]]:
    topo = load(str(THREE_HOP), [f"data_owners.count={owners}"])
    profs = node_profiles(topo, prof)
    plan = make_plan(topo, prof.num_layers, topo.plan.cuts)
    started = time.perf_counter()
    est = simulate(topo, plan, profs, samples=[SAMPLES] * owners, steady=steady)
    return time.perf_counter() - started, {"epoch_s": est.epoch_s,
                                           "periods": est.steady_periods}


def time_plan(owners: int, prof: Profile, steady: bool) -> tuple[float, dict[str, Any]]:
    topo = vgg19_fleet(owners)
    started = time.perf_counter()
    report = choose_plan(topo, prof, steady=steady)
    wall = time.perf_counter() - started
    return wall, {"epoch_s": report.best.estimate.epoch_s, "periods": sum(
        c.estimate.steady_periods for c in report.candidates)}


def sweep(what: str, owners: list[int], cap: float,
          timed: Callable[[int, bool], tuple[float, dict[str, Any]]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for steady in (True, False):
        last: tuple[int, float] | None = None
        for k in owners:
            # fixed costs (the ILP, compiling tasks) dominate below 100 owners
            guess = None if last is None or last[0] < 100 else last[1] * k / last[0]
            row: dict[str, Any] = {"command": what, "steady": "on" if steady else "off",
                                   "owners": k}
            if guess is not None and guess > cap:
                row.update(wall_s="skipped", epoch_s="", periods="",
                           note=f"~{guess:.0f} s expected")
            else:
                wall, info = timed(k, steady)
                row.update(wall_s=wall, **info, note="")
                last = (k, wall)
            rows.append(row)
    return rows


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for what in ("simulate", "plan"):
        for steady in ("on", "off"):
            pts = [(r["owners"], r["wall_s"]) for r in rows if r["command"] == what
                   and r["steady"] == steady and isinstance(r["wall_s"], float)]
            if pts:
                ax.plot(*zip(*pts), marker="o", linestyle="-" if steady == "on" else "--",
                        label=f"mpsl {what}, steady state {steady}")
    ax.axhline(1.0, color="grey", linewidth=0.8, label="target 1 s")
    ax.set(xscale="log", yscale="log", xlabel="owners", ylabel="wall time (s)",
           title="Planner and simulator wall time against owners")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--owners", type=int, nargs="+", default=[3, 10, 100, 1000, 10000])
    ap.add_argument("--cap", type=float, default=120.0, help="seconds a cell may be expected "
                    "to take (extrapolated from the one before)")
    ap.add_argument("--remeasure", action="store_true")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    vgg5 = profile(load(str(THREE_HOP)), "vgg5", args.remeasure)
    vgg19 = profile(vgg19_fleet(1), "vgg19", args.remeasure)
    rows = sweep("simulate", args.owners, args.cap,
                 lambda k, s: time_simulate(k, vgg5, s))
    rows += sweep("plan", args.owners, args.cap, lambda k, s: time_plan(k, vgg19, s))
    meta = run_meta(wall_s=time.perf_counter() - started, samples_per_owner=SAMPLES,
                    cap_s=args.cap)
    publish("scale", "python -m bench.scale", meta,
            [("", "wall time against owners", rows, 3)])
    plot(rows, RESULTS / "scale.png")


if __name__ == "__main__":
    main()
