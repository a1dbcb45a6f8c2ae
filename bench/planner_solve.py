"""ILP solve time: resnet101 (35 layers) into 5 parts under memory caps, CBC (target <= 5 s).

MP-SL's shape: each owner runs the first and last parts (labels local), three compute nodes the
middle ones, 10 owners. The profile is measured on this host (32x32 inputs, micro-batch sizes
1 and 2, one thread) once and kept in bench/results/planner_solve.profile.csv. Each scenario
is solved `--repeats` times (median time reported) and checked against enumeration of all
C(34, 4) = 46,376 cut tuples. Scenarios: no caps; owners capped at 60% of their uncapped
need; nodes also capped where the cap binds but leaves a solution; owners capped at 1 MB.
Metric: the median solve time of CBC per scenario, and whether its objective equals the
enumerated optimum (`CutModel.evaluate_all`). Target: optimal in <= 5 s. Nothing is fitted.

    .venv/bin/python -m bench.planner_solve [--repeats 3] [--remeasure] [--no-check]
        [--quick] [--results DIR]

`--quick`: the scenario without caps alone, solved once with CBC, not enumerated; the profile
is still read from (or measured into) bench/results.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import statistics
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from bench import harness
from bench.harness import RESULTS_DEFAULT as RESULTS  # the profile: bench/results, always
from mpsl.topology import Topology, parse
from planner.cutmodel import CutModel, build
from planner.ilp import Infeasible, solve_model
from planner.measure import measure_profile
from planner.profile import Profile
from planner.resources import BYTES_PER_MB, node_profiles

PROFILE = RESULTS / "planner_solve.profile.csv"
OWNERS, BATCH, N = 10, 32, 4


def topology(owner_mb: float | None = None, node_mb: float | None = None) -> Topology:
    nodes = [{"name": f"node{i}", "address": f"tcp://127.0.0.1:{5590 + i}",
              **({"memory_mb": node_mb} if node_mb else {})} for i in (1, 2, 3)]
    return parse({
        "model": {"name": "resnet101"}, "dataset": {"name": "cifar10"},
        "training": {"batch_size": BATCH, "optimizer": "sgd", "momentum": 0.9},
        "mode": "mpsl", "labels": "local", "plan": {"auto": True, "micro_batches": N},
        "data_owners": {"count": OWNERS, "uplink_mbps": 20, "downlink_mbps": 40,
                        "latency_ms": 10, **({"memory_mb": owner_mb} if owner_mb else {})},
        "compute_nodes": nodes, "links": {"compute_mbps": 200, "compute_latency_ms": 1},
    }, "planner_solve")


def profile(remeasure: bool) -> Profile:
    if PROFILE.exists() and not remeasure:
        return Profile.from_csv(PROFILE)
    started = time.perf_counter()
    prof = measure_profile("resnet101", (3, 32, 32), 10, "batch", (1, 2), repeats=2,
                           optimizer="sgd", momentum=0.9, budget_s=120)
    RESULTS.mkdir(parents=True, exist_ok=True)
    prof.to_csv(PROFILE)
    print(f"measured resnet101 in {time.perf_counter() - started:.1f} s -> {PROFILE}")
    return prof


def enumerate_all(model: CutModel) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Every cut tuple, its objective and each node's memory (`CutModel.evaluate_all`)."""
    L, P = model.num_layers, model.num_parts
    cuts = np.array(list(itertools.combinations(range(1, L), P - 1)), dtype=np.int64)
    total, memory = model.evaluate_all(cuts)
    return cuts, total, memory


def enumerate_best(model: CutModel) -> tuple[float, tuple[int, ...]] | None:
    """The optimum over every cut tuple within the caps, or None."""
    cuts, total, memory = enumerate_all(model)
    ok = np.ones(len(cuts), bool)
    for node, used in memory.items():
        cap = model.caps.get(node)
        if cap is not None:
            ok &= used <= cap * (1 + 1e-9)
    if not ok.any():
        return None
    i = int(np.argmin(np.where(ok, total, np.inf)))
    return float(total[i]), tuple(int(c) for c in cuts[i])


def node_cap_mb(prof: Profile, owner_mb: float) -> float:
    """A node cap that binds but leaves a solution: halfway between the least largest node
    memory any owner-feasible cut tuple needs and what the owner-capped optimum needs."""
    t = topology(owner_mb)
    model = build(t, node_profiles(t, prof), [N] * OWNERS, round_iterations=5)
    cuts, total, memory = enumerate_all(model)
    ok = memory["owner0"] <= owner_mb * BYTES_PER_MB
    nodes = np.max([memory[f"node{i}"] for i in (1, 2, 3)], axis=0)
    best = int(np.argmin(np.where(ok, total, np.inf)))
    least = float(np.min(np.where(ok, nodes, np.inf)))
    return (least + float(nodes[best])) / 2 / BYTES_PER_MB


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--remeasure", action="store_true")
    ap.add_argument("--no-check", action="store_true", help="skip the enumeration")
    ap.add_argument("--quick", action="store_true", help="no caps, CBC, once, no enumeration")
    harness.results_option(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.no_check = 1, True
    out = harness.use_results(args.results)
    started_all = time.perf_counter()
    prof = profile(args.remeasure)
    free = build(topology(), node_profiles(topology(), prof), [N] * OWNERS, round_iterations=5)
    need = solve_model(free).memory
    owner_need = need["owner0"] / BYTES_PER_MB
    scenarios = {
        "no caps": (None, None),
        "owners capped": (0.6 * owner_need, None),
        "all capped": (0.6 * owner_need, node_cap_mb(prof, 0.6 * owner_need)),
        "infeasible": (1.0, None),
    }
    if args.quick:
        scenarios = {"no caps": scenarios["no caps"]}
    solvers = ["cbc"] + ([] if args.quick else ["highs"])
    rows = []
    for name, (owner_mb, node_mb) in scenarios.items():
        t = topology(owner_mb, node_mb)
        model = build(t, node_profiles(t, prof), [N] * OWNERS, round_iterations=5)
        truth = None if args.no_check else enumerate_best(model)
        for solver in solvers:
            times, res, reason = [], None, ""
            for _ in range(args.repeats):
                started = time.perf_counter()
                try:
                    res = solve_model(model, solver=solver)
                except Infeasible as err:
                    reason = str(err)
                times.append(time.perf_counter() - started)
            solve_s = statistics.median(times)
            optimal = (None if args.no_check else
                       (res is None and truth is None) or
                       (res is not None and truth is not None and
                        abs(res.objective_T - truth[0]) <= 1e-6 * truth[0]))
            rows.append({
                "scenario": name, "solver": solver, "layers": model.num_layers,
                "parts": model.num_parts, "owners": OWNERS,
                "owner_cap_mb": round(owner_mb, 1) if owner_mb else None,
                "node_cap_mb": round(node_mb, 1) if node_mb else None,
                "cuts": list(res.cuts) if res else None,
                "objective_s": res.objective_T if res else None,
                "enumerated_cuts": list(truth[1]) if truth else None,
                "status": res.status if res else f"Infeasible: {reason}",
                "solve_s": solve_s, "optimal": optimal,
                "target_met": bool(optimal is not False and solve_s <= 5.0),
            })
    show(rows)
    name = "planner_solve.quick" if args.quick else "planner_solve"
    (out / f"{name}.json").write_text(json.dumps(rows, indent=2) + "\n")
    meta = harness.run_meta(wall_s=time.perf_counter() - started_all)
    (out / f"{name}.md").write_text(harness.header(meta, "python -m bench.planner_solve" + (
        " --quick" if args.quick else "")) + harness.markdown(rows, 4) + "\n")
    with open(out / f"{name}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows({**r, "cuts": " ".join(map(str, r["cuts"] or [])),
                     "enumerated_cuts": " ".join(map(str, r["enumerated_cuts"] or []))}
                    for r in rows)
    return 0 if args.quick or all(r["target_met"] for r in rows if r["solver"] == "cbc") else 1


def show(rows: list[dict]) -> None:
    t = Table(title=f"ILP solve: resnet101 ({rows[0]['layers']} layers) into "
                    f"{rows[0]['parts']} parts, {OWNERS} owners (target: optimal in <= 5 s)")
    for col in ("scenario", "solver", "caps MB (owner/node)", "cuts", "T s/iter", "solve s",
                "optimal", "status"):
        t.add_column(col)
    for r in rows:
        caps = f"{r['owner_cap_mb'] or '-'} / {r['node_cap_mb'] or '-'}"
        t.add_row(r["scenario"], r["solver"], caps, str(r["cuts"] or "-"),
                  f"{r['objective_s']:.4f}" if r["objective_s"] else "-", f"{r['solve_s']:.3f}",
                  str(r["optimal"]), r["status"])
    Console().print(t)


if __name__ == "__main__":
    raise SystemExit(main())
