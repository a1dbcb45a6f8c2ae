"""Heterogeneous owners, measured (`python -m bench.hetero --live`): FL, SFL, PiPar with one
plan and PiPar with per-owner plans run for real, each beside the cost model's estimate.

Definitions (version 1, fixed before the first run):
- The case: bench.hetero's `compute` scenario under 4G (PiPar's heterogeneous setting: half
  of the owners, the odd ones, 2x slower than the others; every owner on the same 10/25 Mbps
  link), vgg5 (BatchNorm) on synthetic 3x32x32 data, B = 32, one server (this host, one
  thread), K = 8 owners (each in a process of its own: `data_owners.per_process` 1) with
  128 samples each (4 iterations per epoch), 2 epochs. K = 8 is bench.hetero's K and the
  largest this 2-core host runs in about 10 minutes with 3 rounds: FL's owners alone need
  1.2 of its cores at the scale below, so more owners would measure the host, not the
  plan.
- Device speed: bench.hetero's, the estimate table's: the fast owners' `compute_scale` 5,
  the slow owners' 10 (`--scale S`: S and 2S). A compute_scale s makes a pass last s x the
  thread CPU time it took, so an emulated device holds while the host has a CPU for it: FL's
  8 owners need 4/5 + 4/10 = 1.2 of this host's 2 cores while they compute (a loaded host
  slows FL's owners first: see the load beside each run).
- Plans: planned once, at the start, as `mpsl run`'s `plan: auto` does, on one profile:
  `--profile CSV`, else this host's (planner.resources.host_profile of the K = 8
  topology, written to RESULTS/hetero.live.profile.csv). FL (every owner the whole model),
  SFL (`choose_plan` in mode sfl), PiPar one plan (`choose_plan`), PiPar per-owner
  (`choose_plan` with `plan.per_owner`: the best of the joint per-owner candidate and the
  one-plan candidates, so it may be the one plan again). The recorded run plans on
  bench.hetero's estimate-table profile (bench/results/hetero_profile.csv): a profile
  measured anew under another load moved the plans (per-owner equal to one plan at N = 4
  and at N = 17 in two tries at load 8-11), and with it the four plans are the estimate
  table's `compute`/4G plans (there at 256 samples per owner).
- Runs: rounds of the four, in that order, `--repeats` rounds (default 3), each run through
  `bench.harness.run_calm` (repeated while CPU steal exceeds 5%, the least-steal try kept).
  The recorded run ran from a clean checkout of its commit (`git worktree`): in the shared
  working tree a node started while another engineer's edit of planner/ was half-written
  died at its import.
- Statistic: a run's epoch time is the `wall_s` of its epochs after the first (median; with
  2 epochs, the second); a plan's measured epoch is the median over the rounds; a speed-up is
  the median over the rounds of the ratio of two runs of the same round. The estimate is the
  cost model's one epoch of the same plan, topology and profile (`planner.simulate`);
  `measured / estimate` is beside it.

`--quick`: K = 2, 32 samples per owner, 1 epoch (timed: no epoch after the first), fixed
plans (SFL and PiPar cut at 1, N = 2; per-owner: the fast owner cut at 2), one round, the
estimates on `--profile` or bench/quick_profiles/hetero_vgg5.csv: a smoke run of the code path.

    .venv/bin/python -m bench.hetero --live [--repeats 3] [--scale S] [--quick] [--results DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

from bench import epoch_time as et
from bench import paper_rows
from bench.harness import (
    ROOT,
    console,
    markdown,
    parse_doc,
    patient,
    publish,
    results_dir,
    run_calm,
    run_meta,
)
from bench.hetero import FAST, doc
from mpsl.plan import Plan, make_plan
from mpsl.training import num_layers
from planner import Profile, choose_plan, simulate
from planner.resources import host_profile

K, SAMPLES, EPOCHS, NETWORK, SCENARIO = 8, 128, 2, "4G", "compute"
QUICK_K, QUICK_SAMPLES = 2, 32
QUICK_PROFILE = ROOT / "bench" / "quick_profiles" / "hetero_vgg5.csv"
PLANS = ("FL", "SFL", "PiPar one plan", "PiPar per-owner")
TEST_SAMPLES = 64


def live_doc(mode: str, owners: int, samples: int, fast: float, epochs: int,
             per_owner: bool = False) -> dict[str, Any]:
    """The topology of one live run: bench.hetero's case on free ports, one owner a process."""
    d = patient(doc(owners, NETWORK, mode, per_owner, SCENARIO, samples, fast, live=True))
    d["training"]["epochs"] = epochs
    d["dataset"]["test_samples"] = TEST_SAMPLES
    d["data_owners"]["per_process"] = 1
    return d


def planned(owners: int, samples: int, fast: float, epochs: int,
            prof: Profile) -> dict[str, tuple[dict[str, Any], Plan, float, str]]:
    """Per plan name: (topology document, plan, the cost model's epoch, where the plan came
    from), planned as `plan: auto` does."""
    out = {}
    fl_doc = live_doc("fl", owners, samples, fast, epochs)
    fl = parse_doc(fl_doc)
    fl_plan = make_plan(fl, num_layers(fl))
    out["FL"] = (fl_doc, fl_plan, simulate(fl, fl_plan, prof, steady=False).epoch_s, "fl")
    for name, mode, per_owner in (("SFL", "sfl", False), ("PiPar one plan", "pipar", False),
                                  ("PiPar per-owner", "pipar", True)):
        d = live_doc(mode, owners, samples, fast, epochs, per_owner)
        started = time.perf_counter()
        report = choose_plan(parse_doc(d), prof, steady=False, bound=False)
        console.print(f"[dim]{name}: planned in {time.perf_counter() - started:.1f} s: "
                      f"{report.best.plan.describe()}[/dim]")
        out[name] = (d, report.best.plan, report.best.estimate.epoch_s, report.best.source)
    return out


def fixed(owners: int, samples: int, fast: float, epochs: int,
          prof: Profile) -> dict[str, tuple[dict[str, Any], Plan, float, str]]:
    """`--quick`'s plans, not searched: SFL and PiPar cut at 1 (N = 1 and 2), per-owner: the
    fast (even) owners cut at 2."""
    out = {}
    for name, mode, cuts, n in (("FL", "fl", [], 1), ("SFL", "sfl", [1], 1),
                                ("PiPar one plan", "pipar", [1], 2),
                                ("PiPar per-owner", "pipar", [1], 2)):
        d = live_doc(mode, owners, samples, fast, epochs)
        d["plan"] = {"cuts": cuts or [1], "micro_batches": n}
        if name == "PiPar per-owner":
            d["data_owners"]["overrides"] += [{"index": k, "cuts": [2]}
                                              for k in range(0, owners, 2)]
        topo = parse_doc(d)
        plan = make_plan(topo, num_layers(topo))
        out[name] = (d, plan, simulate(topo, plan, prof, steady=False).epoch_s, "fixed")
    return out


def rounds(plans: dict[str, tuple[dict[str, Any], Plan, float, str]],
           repeats: int) -> list[dict[str, Any]]:
    """Every run: `repeats` rounds of the plans in PLANS' order."""
    runs = []
    for rep in range(repeats):
        for name in PLANS:
            d, plan, est, _ = plans[name]
            m = run_calm(d, plan)
            walls = m.walls
            epoch = statistics.median(walls[1:] if len(walls) > 1 else walls)
            runs.append({"round": rep, "plan": name, "epoch_s": epoch, "estimate_s": est,
                         "walls": " ".join(f"{w:.2f}" for w in walls),
                         "steal_pct": m.steal_pct, "load_1min": os.getloadavg()[0]})
            console.print(f"round {rep} {name}: epoch {epoch:.2f} s (estimate {est:.2f} s), "
                          f"load {runs[-1]['load_1min']:.1f}, steal {m.steal_pct:.1f}%")
    return runs


def summary(plans: dict[str, tuple[dict[str, Any], Plan, float, str]],
            runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per plan: the measured epoch (median over rounds), the estimate, their ratio, the
    speed-ups of per-owner PiPar over it (median over rounds), and the plan."""
    by = {(r["round"], r["plan"]): r["epoch_s"] for r in runs}
    reps = sorted({r["round"] for r in runs})
    rows = []
    for name in PLANS:
        _, plan, est, source = plans[name]
        measured = statistics.median(by[(k, name)] for k in reps)
        gains = [by[(k, name)] / by[(k, "PiPar per-owner")] for k in reps]
        rows.append({"plan": name, "measured_s": measured, "estimate_s": est,
                     "measured_over_estimate": measured / est,
                     "per_owner_speedup": statistics.median(gains),
                     "speedup_min": min(gains), "speedup_max": max(gains),
                     "rounds": len(reps), "source": source, "describe": plan.describe()})
    return rows


def verdict(rows: list[dict[str, Any]], owners: int) -> str:
    """The verdict in words, from the summary rows."""
    r = {row["plan"]: row for row in rows}
    one = r["PiPar one plan"]["measured_s"]
    est = {n: r[n]["estimate_s"] for n in PLANS}
    return (
        f"Measured (K = {owners}, {NETWORK}, half of the owners 2x slower, median of "
        f"{rows[0]['rounds']} rounds): per-owner PiPar over FL "
        f"{r['FL']['per_owner_speedup']:.2f}x, over SFL {r['SFL']['per_owner_speedup']:.2f}x, "
        f"over PiPar with one plan {r['PiPar one plan']['per_owner_speedup']:.2f}x (rounds "
        f"{r['PiPar one plan']['speedup_min']:.2f} to {r['PiPar one plan']['speedup_max']:.2f}"
        f"x); PiPar with one plan over FL {r['FL']['measured_s'] / one:.2f}x and over SFL "
        f"{r['SFL']['measured_s'] / one:.2f}x (paper: up to 32x and 1.8x). The cost model "
        f"said: per-owner over one plan {est['PiPar one plan'] / est['PiPar per-owner']:.2f}x, "
        f"one plan over FL {est['FL'] / est['PiPar one plan']:.2f}x, over SFL "
        f"{est['SFL'] / est['PiPar one plan']:.2f}x; measured / estimated epoch: "
        + ", ".join(f"{n} {r[n]['measured_over_estimate']:.2f}" for n in PLANS) + ".")


def live(args: argparse.Namespace) -> int:
    """`bench.hetero --live`: plan, run the rounds, write RESULTS/hetero.live.*."""
    started = time.perf_counter()
    loads = [os.getloadavg()[0]]
    fast = args.scale or FAST
    if args.quick:
        owners, samples, epochs, repeats = QUICK_K, QUICK_SAMPLES, 1, 1
    else:
        owners, samples, epochs, repeats = K, SAMPLES, EPOCHS, args.repeats
    console.print(f"fast owners' compute_scale {fast}, slow {2 * fast}")
    if args.profile or args.quick:
        prof = Profile.from_csv(args.profile or QUICK_PROFILE)
    else:
        prof = host_profile(parse_doc(live_doc("pipar", owners, samples, fast, epochs)))
        prof.to_csv(results_dir() / "hetero.live.profile.csv")
    make = fixed if args.quick else planned
    plans = make(owners, samples, fast, epochs, prof)
    runs = rounds(plans, repeats)
    rows = summary(plans, runs)
    steals = [r["steal_pct"] for r in runs]
    loads += [r["load_1min"] for r in runs]
    meta = run_meta(wall_s=time.perf_counter() - started, owners=owners, batch=et.BATCH,
                    samples_per_owner=samples, epochs=epochs, repeats=repeats,
                    compute_scale=[fast, 2 * fast], profile=args.profile, quick=args.quick,
                    load_1min={"start": loads[0], "max": max(loads)},
                    steal_pct={"median": statistics.median(steals), "max": max(steals)})
    name = "hetero.live.quick" if args.quick else "hetero.live"
    command = ".venv/bin/python -m bench.hetero --live" + (
        " --quick" if args.quick else f" --repeats {repeats}") + (
        f" --scale {args.scale}" if args.scale else "") + (
        f" --profile {args.profile}" if args.profile else "")
    publish(name, command, meta, [
        ("", "Heterogeneous owners, measured (s per epoch; speed-up: of per-owner PiPar over "
             "the plan, median over rounds)", rows, 3),
        (".runs", "every run (epoch_s: the epochs after the first)", runs, 3)],
        paper=paper_rows.hetero_live(rows))
    with open(results_dir() / f"{name}.md", "a") as fh:
        table = [{k: r[k] for k in ("plan", "measured_s", "estimate_s",
                                    "measured_over_estimate", "per_owner_speedup")}
                 for r in rows]
        fh.write(f"\n## For bench/README\n\n{markdown(table, 2)}\n\n{verdict(rows, owners)}\n")
    return 0
