"""Planning time against a real full-size epoch, for the cases of bench.planner.

Definitions (version 2, issue 17): for each of bench.planner's six cases, the same topology
with a CIFAR-10-sized training set (synthetic, size 50,000, shape [3, 32, 32], K = 4 owners:
391 iterations per owner and epoch, `training.max_iterations` unset, one epoch). Planning is
timed as `plan: auto` does it: the host profile (`planner.resources.host_profile`) plus
`choose_plan` on that topology. The planner's plan then trains one epoch with the runtime
(nodes.launch.LocalCluster, every node a process); the epoch's `wall_s` (it holds the
warm-up, a fraction of a second in minutes) is the full-size epoch. Share = planning / epoch.
Target: <= 10% in every case.

Duration: one profile and plan (10-25 s) plus one epoch (simulated 1-3 min) per case, and the
nodes' start with 50,000 samples each; about 17 minutes for the six cases. `--quick` (a
smoke run of the code path, not a full-size epoch): vgg5 on WiFi, 256 samples, the profile
read from bench/quick_profiles/planner_vgg5.csv (measured once) instead of measured.

    .venv/bin/python -m bench.planner_full [--quick] [--results DIR]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from bench import harness, stats
from bench.harness import (
    NETWORKS,
    console,
    parse_doc,
    publish,
    run_calm,
    run_meta,
    wait_for_quiet,
)
from bench.planner import MODELS, QUICK_PROFILE, describe, doc_for
from mpsl.training import iterations_per_epoch, owner_samples
from planner import Profile, choose_plan

FULL_SAMPLES = 50_000  # CIFAR-10's training set
QUICK_SAMPLES = 256  # a smoke run: the code path, not a full-size epoch
SHARE_MAX_PCT = 10.0


def full_case(model: str, net: str, max_steal: float, attempts: int,
              samples: int = FULL_SAMPLES, repeats: int = 3,
              profile: Path | None = None) -> dict[str, Any]:
    """Plan the full-size topology as `plan: auto` does (on `profile` when given: a smoke
    run), then train one epoch of its plan."""
    from planner.resources import host_profile

    doc = doc_for(model, net, epochs=1, samples=samples)
    topo = parse_doc(doc)
    started = time.perf_counter()
    prof = Profile.from_csv(profile) if profile else host_profile(topo, repeats)
    profile_s = time.perf_counter() - started
    report = choose_plan(topo, prof)
    plan_s = time.perf_counter() - started - profile_s
    plan = report.best.plan
    m = run_calm(doc, plan, max_steal, attempts)
    epoch_s = m.walls[0]
    load = os.getloadavg()[0]
    share = 100 * (profile_s + plan_s) / epoch_s
    console.print(f"[dim]{model} {net}: {describe(plan)}, planning {profile_s + plan_s:.1f} s, "
                  f"epoch {epoch_s:.1f} s, steal {m.steal_pct:.1f}%[/dim]")
    return {"model": model, "network": net, "plan": describe(plan),
            "iterations": iterations_per_epoch(topo.training, owner_samples(topo)[0]),
            "profile_s": profile_s, "choose_plan_s": plan_s, "planning_s": profile_s + plan_s,
            "simulated_epoch_s": report.best.estimate.epoch_s, "epoch_s": epoch_s,
            "planning_pct_epoch": share, "met (<= 10%)": share <= SHARE_MAX_PCT,
            "steal_pct": m.steal_pct, "load_1min": load}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help=f"vgg5 on WiFi only, {QUICK_SAMPLES} samples (not full size)")
    ap.add_argument("--max-load", type=float, default=2.0)
    ap.add_argument("--max-wait", type=float, default=300.0, help="seconds to wait for quiet")
    ap.add_argument("--max-steal", type=float, default=5.0,
                    help="CPU steal %% above which a run is run again")
    ap.add_argument("--attempts", type=int, default=3, help="runs at most, per measurement")
    harness.results_option(ap)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    harness.use_results(args.results)
    started = time.perf_counter()
    load0 = wait_for_quiet(args.max_load, args.max_wait)
    cases = [("vgg5", "WiFi")] if args.quick else [(m, n) for m in MODELS for n in NETWORKS]
    samples = QUICK_SAMPLES if args.quick else FULL_SAMPLES
    rows = [full_case(m, n, args.max_steal, args.attempts, samples, 1 if args.quick else 3,
                      QUICK_PROFILE if args.quick else None) for m, n in cases]
    shares = [r["planning_pct_epoch"] for r in rows]
    summ = [stats.target_row("planning / full-size epoch, max %", max(shares),
                             f"<= {SHARE_MAX_PCT:g}", max(shares) <= SHARE_MAX_PCT)]
    steals, loads = [r["steal_pct"] for r in rows], [r["load_1min"] for r in rows]
    meta = run_meta(samples=FULL_SAMPLES, quick=args.quick, summary=summ,
                    steal_pct={"median": stats.median(steals), "max": max(steals)},
                    load_1min={"start": load0, "max": max(loads), "median": stats.median(loads)},
                    wall_s=time.perf_counter() - started)
    name = "planner_full.quick" if args.quick else "planner_full"
    publish(name, "python -m bench.planner_full" + (" --quick" if args.quick else ""),
            meta, [("", "planning against a full-size epoch", rows, 2),
                   (".summary", "summary", summ, 3)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
