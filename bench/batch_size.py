"""Batch size sensitivity (issue 21, experiment 4): epoch time of FL, SFL and PiPar, and PiPar's
speedup over them, for B in {16, 32, 64, 100, 128} (PiPar's Fig. 10).

Setup (version 1, fixed before the first run): vgg5 (BatchNorm) on synthetic 32x32x3 data, 10
classes, K = 2 owners x 256 samples (B = 100: two full batches and one of 56), SGD lr 0.01
momentum 0.9, one compute node at this host's speed, 4G+ links (20 up, 40 down Mbit/s), owners
at `compute_scale` 7.7 (bench.large_models.owner_scale: bench.epoch_time's Raspberry Pi 3B
scale, read from results/epoch_time.json). Profile: vgg5 once (`planner.measure_profile`, one
thread, momentum 0.9, sizes 1, 2, 4, ..., 128, 3 repeats). Plans: FL the whole model; SFL and
PiPar by `planner.choose_plan` with that profile, per B.

An owner is lost only after 600 s of silence (`harness.patient`).

Metric (defined once): epoch time = the `wall_s` of epoch 2 of 2 (epoch 1 holds the warm-up),
one run per mode and B, the modes of one B back to back; SFL and PiPar are measured, FL (the
slowest by far on a device at 1/7.7 of this host) is estimated only, to fit the time here;
speedup = a baseline's time / PiPar's at the same B. Each run records the cost model's estimate
too (`bench.cost_accuracy.fields`, experiment 8). Estimates (marked so): `simulate` of the same
plans at K = 2 and at the paper's scale, K = 100 owners x 500 samples. The paper's claim read
from its Fig. 10: PiPar is the fastest at every B; met when ours is, at every B.

Scale: 10 runs, 35 min here at a 1-minute load of 25-40 (2026-12-06). `--quick`: B
= 16 alone, a 1-repeat profile at sizes 1 and 16, fixed plans (SFL cut 2, PiPar cut 2 and N =
4), estimates only.

    .venv/bin/python -m bench.batch_size [--quick] [--results DIR]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from bench import harness
from bench.cost_accuracy import fields
from bench.harness import NETWORKS, console, num_layers, parse_doc, publish, run, run_meta
from bench.large_models import owner_scale
from mpsl.plan import Plan, make_plan
from planner import Profile, measure_profile, simulate
from planner.aps import choose_plan

MODEL, SHAPE, CLASSES = "vgg5", (3, 32, 32), 10
NET, OWNERS, SAMPLES, EPOCHS = "4G+", 2, 256, 2
PAPER_K, PAPER_SAMPLES = 100, 500
MODES = ("fl", "sfl", "pipar")
FULL = {"batches": (16, 32, 64, 100, 128), "live": True}
QUICK = {"batches": (16,), "live": False}


def doc_for(mode: str, batch: int, scale: float, owners: int = OWNERS,
            samples: int = SAMPLES) -> dict[str, Any]:
    up, down = NETWORKS[NET]
    ports = list(range(41000, 41002 + owners)) if owners > OWNERS else None
    doc = harness.topology(
        owners=owners, compute=1, mode=mode, model=MODEL,
        dataset=harness.synthetic(samples * owners, SHAPE, CLASSES, 64),
        training={"epochs": EPOCHS, "batch_size": batch, "lr": 0.01, "momentum": 0.9},
        up=up, down=down, compute_scale=scale, ports=ports)
    return harness.patient(doc)


def profile(batches: tuple[int, ...], quick: bool) -> Profile:
    if quick:
        return measure_profile(MODEL, SHAPE, CLASSES, "batch", (1, *batches), 1,
                               momentum=0.9, wake_repeats=1)
    sizes = sorted({1 << k for k in range(8) if 1 << k <= max(batches)} | set(batches))
    return measure_profile(MODEL, SHAPE, CLASSES, "batch", sizes, 3, momentum=0.9)


def plan_for(mode: str, batch: int, prof: Profile, scale: float, quick: bool) -> Plan:
    topo = parse_doc(doc_for(mode, batch, scale))
    if mode == "fl" or quick:
        return make_plan(topo, num_layers(topo), None if mode == "fl" else (2,),
                         4 if mode == "pipar" else 1)
    return choose_plan(topo, prof, bound=False).best.plan


def estimate(mode: str, batch: int, plan: Plan, prof: Profile, scale: float, k: int,
             samples: int) -> float:
    topo = parse_doc(doc_for(mode, batch, scale, k, samples))
    kp = make_plan(topo, num_layers(topo), plan.cuts, plan.micro_batches[0])
    return simulate(topo, kp, prof).epoch_s


def one_batch(batch: int, prof: Profile, scale: float, quick: bool, live: bool
              ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per mode at batch size `batch`: plan, estimates at K = 2 and 100, and (`live`) the
    measured epoch with experiment 8's fields."""
    rows, runs = [], []
    for mode in MODES:
        plan = plan_for(mode, batch, prof, scale, quick)
        row: dict[str, Any] = {"B": batch, "mode": mode, "plan": plan.describe(),
                               "est_s (K=2)": estimate(mode, batch, plan, prof, scale,
                                                       OWNERS, SAMPLES)}
        if not quick:
            row[f"est_s (K={PAPER_K})"] = estimate(mode, batch, plan, prof, scale, PAPER_K,
                                                   PAPER_SAMPLES)
        if live and mode != "fl":
            doc = doc_for(mode, batch, scale)
            m = run(doc, plan)
            f = fields(doc, plan, prof, m)  # its measured_epoch_s: epoch 2 of 2, as here
            runs.append({"B": batch, "mode": mode, **f, "steal_pct": m.steal_pct,
                         "load_1min": os.getloadavg()[0]})
            row["measured_s"] = m.walls[-1]
            console.print(f"B = {batch} {mode}: {m.walls[-1]:.2f} s (estimate "
                          f"{f['estimated_epoch_s']:.2f} s), steal {m.steal_pct:.1f}%")
        rows.append(row)
    for r in rows:  # FL is estimated only: its speedup is from the estimates
        key = "measured_s" if "measured_s" in r else "est_s (K=2)"
        r["pipar_speedup"] = r[key] / rows[-1][key]
        if not quick:
            r[f"pipar_speedup (est, K={PAPER_K})"] = (r[f"est_s (K={PAPER_K})"]
                                                     / rows[-1][f"est_s (K={PAPER_K})"])
    return rows, runs


def paper_rows(rows: list[dict[str, Any]], live: bool) -> list[dict[str, Any]]:
    def fastest(key: str) -> tuple[bool, str]:
        ups = {(r["B"], r["mode"]): r[key] for r in rows if r["mode"] != "pipar" and key in r}
        ok = bool(ups) and all(x >= 1.0 for x in ups.values())
        span = f"{min(ups.values()):.2f}-{max(ups.values()):.2f}x" if ups else "-"
        return ok, span

    out = []
    ok, span = fastest("pipar_speedup")
    what = "SFL measured, FL estimated, K = 2" if live else "estimate, K = 2"
    out.append({"figure": "PiPar Fig. 10", "metric": f"PiPar's speedup over FL and SFL, B = "
                f"16-128 ({what})", "paper": "PiPar fastest at every B", "ours": span,
                "verdict": "met" if ok else "not met",
                "reason": "" if ok else "see batch_size.md: a baseline at least as fast"})
    ok, span = fastest(f"pipar_speedup (est, K={PAPER_K})")
    if span != "-":
        out.append({"figure": "PiPar Fig. 10", "metric": f"the same, estimate at K = {PAPER_K}",
                    "paper": "PiPar fastest at every B", "ours": span,
                    "verdict": "met" if ok else "not met",
                    "reason": "an estimate, not a measurement"})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="B = 16, estimates only")
    harness.results_option(ap)
    args = ap.parse_args(argv)
    harness.use_results(args.results)
    size = QUICK if args.quick else FULL
    started, load0 = time.perf_counter(), os.getloadavg()[0]
    scale, host, source = owner_scale()
    prof = profile(size["batches"], args.quick)
    rows: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    for b in size["batches"]:
        r, x = one_batch(b, prof, scale, args.quick, size["live"])
        rows += r
        runs += x
    paper = paper_rows(rows, size["live"])
    meta = run_meta(quick=args.quick, compute_scale=scale, host_gflops=host, scale_from=source,
                    steal_pct=harness.steal_summary([r["steal_pct"] for r in runs]),
                    load_1min={"start": load0, "max": max([load0] + [
                        r["load_1min"] for r in runs])},
                    wall_s=time.perf_counter() - started)
    name = "batch_size.quick" if args.quick else "batch_size"
    publish(name, "python -m bench.batch_size" + (" --quick" if args.quick else ""), meta,
            [("", "epoch time against B; pipar_speedup = time / PiPar's", rows, 2)],
            paper=paper)
    if runs:  # experiment 8's fields, in JSON only (bench.cost_accuracy reads them)
        harness.save(f"{name}.fields", runs, {"date": meta["date"]})
    harness.readme_section(name, paper)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
