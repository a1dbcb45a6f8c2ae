"""Memory per compute node against the multihop level (MP-SL's Fig. 3): one to four compute
nodes, vgg19 and resnet101 at 32x32, measured at the K this machine holds and estimated by
the cost model for K = 100.

Definitions (version 1, fixed before the first run):
- Setup: synthetic 3x32x32 data, 10 classes, MP-SL's U-shape (labels local: every owner runs
  layer 0 and the last layer with the loss), M = 1 (one-hop parallel split learning: one
  compute node holds every middle layer) to 4 compute nodes in a chain; B = 8, N = 2
  micro-batches, SGD with momentum 0.9 (state factor 3: parameter, gradient, momentum), one
  iteration per owner, one epoch; WiFi links (50/50 Mbps) for owners, unshaped between compute
  nodes; owners pooled in one process (`data_owners.per_process` = K), at this host's speed.
- Cuts: the middle layers split into M contiguous parts minimising the largest part's
  weight, a layer weighing K_PAPER x (3 x its parameter bytes + B x its kept activation bytes
  per sample) (dynamic programme); the same cuts at every K, so measured and estimated
  memory are of the same plan.
- Estimate: `planner.simulate`'s `memory_detail` (parameter state + peak kept activations;
  message buffers listed apart, as bench/cost_model.py compares) of the compute node, with this
  host's profile (`measure_profile`, micro-batches 1..B, 3 repeats; `--quick`: the untimed
  `byte_profile`).
- Measured: each compute node's `peak_tensor_bytes` (state + peak saved activations) and
  `peak_rss_bytes` (process peak RSS, torch runtime included) from results.json.
- Per (model, M, K): the largest compute node (by peak_tensor_bytes; its peak RSS beside).
  Reduction = 1 - largest(M) / largest(M = 1). Extrapolated to K = 100: the cost model at
  K = 100, and beside it the straight lines through the measured largest node's tensor bytes
  and RSS at the two live K (per-owner slopes), all marked as estimates.

    .venv/bin/python -m bench.memory [--owners 2 8] [--quick] [--results DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import harness
from bench.harness import load_doc, publish, run_meta, synthetic, topology
from mpsl.plan import make_plan
from mpsl.training import num_layers
from planner import Profile, measure_profile, profile_sizes, simulate
from planner.measure import byte_profile

MODELS = ("vgg19", "resnet101")
HOPS = (1, 2, 3, 4)
K_PAPER = 100
BATCH, N, FACTOR = 8, 2, 3
SHAPE, CLASSES = (3, 32, 32), 10
GIB = 1024 ** 3
MIB = 1024 ** 2
PAPER_VGG19_GB = 80.0  # MP-SL Fig. 3: VGG-19, 100 owners, one node
PAPER_REDUCTION_PCT = 76.0  # MP-SL: largest node's memory, multihop against one-hop


def balanced_cuts(prof: Profile, hops: int) -> tuple[int, ...]:
    """The plan's cuts (U-shape: owner [0, 1), M middle parts, owner [L-1, L)) whose middle
    parts minimise the largest part's weight (module docstring)."""
    layers = prof.layers
    mid = list(range(1, len(layers) - 1))
    w = [K_PAPER * (FACTOR * layers[i].param_bytes + BATCH * layers[i].act_bytes) for i in mid]
    n = len(w)
    if hops > n:
        raise ValueError(f"{prof.source or 'profile'}: {n} middle layers cannot fill {hops} "
                         "compute nodes")
    prefix = [0]
    for v in w:
        prefix.append(prefix[-1] + v)
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(hops + 1)]  # best[m][j]: first j layers, m parts
    back = [[0] * (n + 1) for _ in range(hops + 1)]
    best[0][0] = 0
    for m in range(1, hops + 1):
        for j in range(m, n + 1):
            for i in range(m - 1, j):
                cost = max(best[m - 1][i], prefix[j] - prefix[i])
                if cost < best[m][j]:
                    best[m][j], back[m][j] = cost, i
    bounds, j = [], n
    for m in range(hops, 0, -1):
        bounds.append(j)
        j = back[m][j]
    return (1, *(1 + b for b in sorted(bounds)))


def doc_for(model: str, hops: int, owners: int, cuts: tuple[int, ...]) -> dict[str, Any]:
    doc = topology(owners=owners, compute=hops, mode="mpsl", model=model, labels="local",
                   dataset=synthetic(BATCH * owners, SHAPE, CLASSES, 8),
                   training={"epochs": 1, "batch_size": BATCH, "lr": 0.01, "momentum": 0.9,
                             "max_iterations": 1, "seed": 0},
                   up=50.0, down=50.0, cuts=cuts, micro_batches=N, timeout_s=600)
    doc["data_owners"]["per_process"] = owners
    doc["failure"] = {"timeout_s": 300}  # a loaded machine: long silences are not losses
    return doc


def estimate(model: str, hops: int, owners: int, cuts: tuple[int, ...],
             prof: Profile) -> dict[str, dict[str, int]]:
    """The cost model's memory detail of every compute node."""
    topo = harness.parse_doc(doc_for(model, hops, owners, cuts))
    est = simulate(topo, make_plan(topo, prof.num_layers), prof)
    return {n: d for n, d in est.memory_detail.items() if n.startswith("node")}


def live(model: str, hops: int, owners: int, cuts: tuple[int, ...]) -> dict[str, Any]:
    """One run; results.json's nodes."""
    from nodes.launch import LocalCluster

    with tempfile.TemporaryDirectory(prefix="mpsl-memory-") as tmp:
        path, topo = load_doc(doc_for(model, hops, owners, cuts), Path(tmp))
        plan = make_plan(topo, num_layers(topo))
        results = LocalCluster(str(path), (), topo, plan, Path(tmp) / "run").run()
        return dict(results["nodes"])


def live_retried(model: str, hops: int, owners: int, cuts: tuple[int, ...],
                 tries: int = 2) -> dict[str, Any]:
    """`live`, once more when a node fails (the shared machine: a node that could not start)."""
    from nodes.launch import LaunchError

    for attempt in range(tries):
        try:
            return live(model, hops, owners, cuts)
        except LaunchError as err:
            harness.console.print(f"[red]{model} M={hops} K={owners}: {err}[/red]")
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


def largest(detail: dict[str, dict[str, int]]) -> tuple[str, int]:
    """The compute node with the most parameter state + activations, and that sum."""
    node = max(detail, key=lambda n: detail[n]["params"] + detail[n]["activations"])
    return node, detail[node]["params"] + detail[node]["activations"]


def cell(model: str, hops: int, owners: int, cuts: tuple[int, ...], prof: Profile,
         measure: bool) -> dict[str, Any]:
    """One (model, M, K): the largest compute node, estimated and (when `measure`) measured."""
    node, est = largest(estimate(model, hops, owners, cuts, prof))
    row: dict[str, Any] = {"model": model, "hops": hops, "owners": owners,
                           "cuts": str(list(cuts)), "node": node, "est_MiB": est / MIB}
    if measure:
        nodes = live_retried(model, hops, owners, cuts)
        peak = max((n for n in nodes if n.startswith("node")),
                   key=lambda n: nodes[n]["peak_tensor_bytes"])
        meas = nodes[peak]["peak_tensor_bytes"]
        row.update({"meas_node": peak, "meas_MiB": meas / MIB,
                    "error_pct": 100 * (est - meas) / meas,
                    "meas_rss_MiB": nodes[peak]["peak_rss_bytes"] / MIB})
    return row


def extrapolated(cells: list[dict[str, Any]], est100: dict[tuple[str, int], int],
                 owners: list[int]) -> list[dict[str, Any]]:
    """Per (model, M): the largest node at K = 100, the cost model's and the measured line's,
    and the reduction against M = 1 (estimates, not measurements)."""
    rows = []
    for (model, hops), est in est100.items():
        ks = sorted({c["owners"] for c in cells if c["model"] == model} & set(owners))
        lo, hi = ks[0], ks[-1]
        row: dict[str, Any] = {"model": model, "hops": hops, "est_K100_GiB": est / GIB,
                               "est_reduction_pct": 100 * (1 - est / est100[(model, 1)])}
        for col, key in (("meas_MiB", ""), ("meas_rss_MiB", "rss_")):
            meas: dict[int, float] = {c["owners"]: c[col] for c in cells
                                      if c["model"] == model and c["hops"] == hops and col in c}
            if lo != hi and lo in meas and hi in meas:
                slope = (meas[hi] - meas[lo]) / (hi - lo)
                row[f"{key}per_owner_MiB"] = slope
                row[f"{key}line_K100_GiB"] = (meas[hi] + slope * (K_PAPER - hi)) * MIB / GIB
        rows.append(row)
    for row in rows:
        one = next(r for r in rows if r["model"] == row["model"] and r["hops"] == 1)
        for key in ("line", "rss_line"):
            if f"{key}_K100_GiB" in row and f"{key}_K100_GiB" in one:
                row[f"{key}_reduction_pct"] = 100 * (1 - row[f"{key}_K100_GiB"]
                                                     / one[f"{key}_K100_GiB"])
    return rows


def paper_rows(ext: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The paper's numbers beside ours (module docstring: how each verdict is decided)."""
    rows = []
    vgg = next((r for r in ext if r["model"] == "vgg19" and r["hops"] == 1), None)
    if vgg is not None:
        ours = vgg["est_K100_GiB"] * GIB / 1e9
        rows.append({
            "figure": "MP-SL Fig. 3", "metric": "VGG-19, K = 100, one-hop: compute node GB",
            "paper": PAPER_VGG19_GB, "ours": round(ours, 1), "verdict": "not comparable",
            "reason": "estimate (cost model), not measured; the paper's optimizer, batch and "
                      "VGG-19 variant are not ours (SGD+momentum, B = 8, 39.0 M parameters: "
                      f"{ours / K_PAPER:.2f} GB per owner copy)"})
    best = max(ext, key=lambda r: r["est_reduction_pct"])
    ok = best["est_reduction_pct"] >= PAPER_REDUCTION_PCT - 5
    rows.append({
        "figure": "MP-SL Fig. 3", "metric": "largest node's memory, multihop vs one-hop: "
                                            "reduction % (up to)",
        "paper": PAPER_REDUCTION_PCT, "ours": round(best["est_reduction_pct"], 1),
        "verdict": "met" if ok else "not met",
        "reason": f"{best['model']}, {best['hops']} compute nodes, K = 100 (cost model); "
                  "met = within 5 points of the paper or above" + (
                      "" if ok else "; a node holds at least its largest layer")})
    return rows


def verdict(cells: list[dict[str, Any]], ext: list[dict[str, Any]]) -> str:
    """The honest verdict in words, from the tables."""
    errs = [abs(c["error_pct"]) for c in cells if "error_pct" in c]
    lines = []
    if errs:
        lines.append(f"Estimate against measured tensor bytes at the live K: max |error| "
                     f"{max(errs):.1f}% over {len(errs)} cells.")
    for r in ext:
        if r["hops"] == max(e["hops"] for e in ext):
            lines.append(f"{r['model']} at K = {K_PAPER}, {r['hops']} compute nodes: largest "
                         f"node {r['est_K100_GiB']:.1f} GiB (cost model), "
                         f"{r['est_reduction_pct']:.0f}% below one-hop.")
    return " ".join(lines)


def kept(results: Path | None, models: list[str]) -> list[dict[str, Any]]:
    """The rows of RESULTS/memory.json of models other than `models` (`--append`)."""
    path = (results or harness.RESULTS_DEFAULT) / "memory.json"
    if not path.exists():
        return []
    return [r for r in json.loads(path.read_text())["rows"] if r["model"] not in models]


def previous_meta(results: Path | None) -> dict[str, Any]:
    """The meta of RESULTS/memory.json, if any."""
    path = (results or harness.RESULTS_DEFAULT) / "memory.json"
    return dict(json.loads(path.read_text())["meta"]) if path.exists() else {}


def kept_k100(results: Path | None, models: list[str]) -> dict[tuple[str, int], int]:
    path = (results or harness.RESULTS_DEFAULT) / "memory.k100.json"
    if not path.exists():
        return {}
    return {(r["model"], r["hops"]): int(r["est_K100_GiB"] * GIB)
            for r in json.loads(path.read_text())["rows"] if r["model"] not in models}


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--owners", type=int, nargs="+", default=[2, 8],
                    help="the live K (the machine's memory bounds the largest)")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--rewrite", action="store_true",
                    help="write the tables again from the last results, running nothing")
    ap.add_argument("--append", action="store_true",
                    help="keep the other models' rows of the last results (one model per run)")
    ap.add_argument("--quick", action="store_true",
                    help="vgg19, M = 1 and 2, K = 1, estimates only (untimed byte profile)")
    harness.results_option(ap)
    return ap.parse_args(argv)


def profile_of(model: str, quick: bool) -> Profile:
    if quick:
        return byte_profile(harness.parse_doc(doc_for(model, 1, 1, (1, 2))))
    return measure_profile(model, SHAPE, CLASSES, "batch", profile_sizes(BATCH), 3,
                           momentum=0.9)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started, loads, steal0 = time.perf_counter(), [os.getloadavg()[0]], harness.cpu_jiffies()
    models, hops = (["vgg19"], (1, 2)) if args.quick else (args.models, HOPS)
    owners = [1] if args.quick else sorted(args.owners)
    cells, est100 = [], {}
    if args.rewrite:
        models = []
    for model in models:
        prof = profile_of(model, args.quick)
        for m in hops:
            cuts = balanced_cuts(prof, m)
            est100[(model, m)] = largest(estimate(model, m, K_PAPER, cuts, prof))[1]
            for k in owners:
                cells.append(cell(model, m, k, cuts, prof, measure=not args.quick))
                loads.append(os.getloadavg()[0])
                harness.console.print(f"[dim]{cells[-1]}[/dim]")
    if args.append or args.rewrite:  # the other models' rows of the last run, kept
        cells, est100 = kept(args.results, models) + cells, {**kept_k100(args.results,
                                                                        models), **est100}
    ext = extrapolated(cells, est100, sorted({c["owners"] for c in cells}))
    paper = paper_rows(ext)
    command = "python -m bench.memory" + (" --quick" if args.quick else (
        f" --models {' '.join(models)} --owners {' '.join(map(str, owners))}"
        + (" --append" if args.append else "")))
    before = previous_meta(args.results) if args.append or args.rewrite else {}
    commands = before.get("commands", []) + ([] if args.rewrite else [command])
    meta = run_meta(owners=owners, k_paper=K_PAPER, batch=BATCH, micro_batches=N,
                    quick=args.quick, commands=commands,
                    wall_s=before.get("wall_s", 0.0) + time.perf_counter() - started,
                    load_1min={"start": before.get("load_1min", {}).get("start", loads[0]),
                               "max": max(loads + [before.get("load_1min", {}).get("max", 0)])},
                    steal_pct={"median": harness.steal_pct(steal0, harness.cpu_jiffies()),
                               "max": harness.steal_pct(steal0, harness.cpu_jiffies())})
    harness.use_results(args.results)
    name = "memory.quick" if args.quick else "memory"
    command = "; ".join(commands) or command
    publish(name, command, meta, [
        ("", "largest compute node, estimated vs measured (state + kept activations)",
         cells, 1),
        (".k100", f"largest compute node at K = {K_PAPER} (estimates)", ext, 2)], paper)
    harness.readme_section(name, paper, verdict(cells, ext))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
