"""Planner against the measured optimum: score = T_opt / T_plan, and planning time vs one epoch.

PiPar's two-part case: K = 4 owners, `compute_scale` 5 (they mostly sleep, so that they, the
server and the aggregator share this machine's 2 cores), one server at this host's speed, one
torch thread per process, batch 32. Models: vgg5 (BatchNorm) and mobilenetv3_small (GroupNorm,
as in earlier runs; with BatchNorm its 1x1 maps need micro-batches of 2 or more), both on
synthetic 32x32x3 data, on the 4G, 4G+ and WiFi links of bench/harness.py.

For every (model, network):
- the host is profiled once per model as `mpsl plan` does it (micro-batch sizes 1, 2, 4, ... B,
  3 repeats, one thread), and `choose_plan` plans the topology: its best plan is measured, T_plan;
- `exhaustive` simulates every cut x N (1..32); the `--top` best by simulated epoch time are
  measured too, and T_opt is the best measured among them and the planner's plan;
- every plan runs EPOCHS epochs, `--repeats` times, interleaved over all cases, the plans of a
  case in an order that rotates from round to round; a run's time is the median `wall_s` of its
  epochs after the first (which holds the warm-up), the plan's time the median over the
  repeats. Score = T_opt / T_plan (1 when the planner's plan is the measured best).
- a run during which the hypervisor took more than `--max-steal` % of the CPU for other guests
  is run again (at most `--attempts` times in all) and the attempt with the least steal counts:
  steal slows every process of a run, it is not the plan's doing. The choice never looks at the
  measured time; every attempt's steal is stored.
- the machine's speed is probed just before and just after every run (harness.SpeedProbe: CPU
  seconds of one training step of the case's model, batch 8, one thread): on this shared VM it
  drifts by up to 1.6x within minutes with no steal recorded. Beside the scores on measured
  times, which the targets are judged on, the held-out score is also given with every run's
  time scaled by the model's median probe over its probe (a diagnostic: how the plans compare
  on a machine of constant speed), and `probe_r` is the correlation over runs of log(run time
  / the plan's median) with log(probe / the plan's median probe).
- held-out score: the first half of the rounds selects the measured best plan, the second half
  times it and the planner's plan; score = min(1, T_best / T_plan) on the second half. Picking
  the fastest of several noisy medians and timing it with the same runs biases T_opt low (the
  winner's curse): plans the simulation puts 0.1% apart would score < 1 against each other by
  noise alone. The held-out score is the one the targets are judged on; the score over all
  repeats is reported beside it.
- paired held-out score (a diagnostic): the same halves, but every run is compared with the
  runs of its own round (`paired_held_out_score`), which cancels drift from round to round.

Planning time is the profile plus `choose_plan`, against one epoch. The benchmark's epochs are
cut to `ITERS` iterations to keep the run short, so it is also given for the full-size problem:
the same topology with a CIFAR-10-sized training set (50,000 samples, 391 iterations per owner
and epoch), planned anew and timed, against a full epoch extrapolated from the measured epoch
per iteration. The resnet101 ILP solve time comes from bench/results/planner_solve.json (made
by bench/planner_solve.py), when it exists.

    .venv/bin/python bench/planner.py [--quick] [--repeats 6] [--top 3] [--max-load 2]
        [--max-steal 5] [--attempts 3]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import (
    NETWORKS,
    RESULTS,
    SpeedProbe,
    console,
    load_doc,
    markdown,
    median,
    run_calm,
    save,
    show,
    steady_epoch_time,
    topology,
    wait_for_quiet,
)
from mpsl.plan import Plan
from mpsl.topology import Topology
from planner import Profile, choose_plan, exhaustive, measure_profile, profile_sizes

K, BATCH, ITERS, OWNER_SCALE = 4, 32, 3, 5.0
EPOCHS = 6  # epoch 1 is the warm-up; 2-6 are measured
FULL_SAMPLES = 50_000  # CIFAR-10's training set, for the full-size planning time
MODELS = {"vgg5": ((3, 32, 32), "batch"), "mobilenetv3_small": ((3, 32, 32), "group")}
PROFILE_REPEATS = 3  # as planner.resources.host_profile


def doc_for(model: str, net: str, samples: int | None = None) -> dict[str, Any]:
    shape, norm = MODELS[model]
    up, down = NETWORKS[net]
    training: dict[str, Any] = {"epochs": EPOCHS, "batch_size": BATCH, "lr": 0.01}
    if samples is None:
        samples = BATCH * ITERS * K
        training["max_iterations"] = ITERS
    doc = topology(
        owners=K, compute=1, mode="pipar", model=model, norm=norm,
        dataset={"name": "synthetic", "test_samples": 64,
                 "options": {"shape": list(shape), "num_classes": 10, "size": samples}},
        training=training, up=up, down=down, compute_scale=OWNER_SCALE,
    )
    doc["plan"] = {"auto": True}
    return doc


def parse_doc(doc: dict[str, Any]) -> Topology:
    with tempfile.TemporaryDirectory() as tmp:
        return load_doc(doc, Path(tmp))[1]


def key(plan: Plan) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return plan.cuts, plan.micro_batches


def profile(model: str) -> tuple[Profile, float]:
    """This host's profile, as `mpsl plan` measures it (planner.resources.host_profile)."""
    shape, norm = MODELS[model]
    sizes = profile_sizes(BATCH)
    started = time.perf_counter()
    prof = measure_profile(model, shape, 10, norm, sizes, PROFILE_REPEATS)
    return prof, time.perf_counter() - started


def plan_case(model: str, net: str, prof: Profile, top: int) -> dict[str, Any]:
    """Plan one case and pick the plans to measure: the planner's and the simulated top."""
    doc = doc_for(model, net)
    topo = parse_doc(doc)
    report = choose_plan(topo, prof)
    cands = exhaustive(topo, prof)
    sim = {key(c.plan): c.estimate.epoch_s for c in cands}
    rank = {key(c.plan): i + 1 for i, c in enumerate(cands)}
    plans: dict[Any, Plan] = {}
    for c in cands:
        if len(plans) >= top:
            break
        plans.setdefault(key(c.plan), c.plan)
    best = report.best.plan
    plans.setdefault(key(best), best)
    full = parse_doc(doc_for(model, net, FULL_SAMPLES))
    started = time.perf_counter()
    full_report = choose_plan(full, prof)
    full_s = time.perf_counter() - started
    return {"model": model, "net": net, "doc": doc, "plans": plans, "best": key(best),
            "sim": sim, "rank": rank, "plan_s": report.plan_s, "solve_s": report.solve_s,
            "full_plan_s": full_s, "full_plan": full_report.best.plan.describe(),
            "full_iters": math.ceil(FULL_SAMPLES / K / BATCH), "space": len(cands)}


def describe(plan_key: Any, plans: dict[Any, Plan]) -> str:
    return plans[plan_key].describe().replace("owner", "o").replace("node1", "s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="vgg5 on 4G only, 2 repeats, top 2")
    ap.add_argument("--repeats", type=int, default=8,
                    help="rounds; the first half selects, the second half scores")
    ap.add_argument("--top", type=int, default=3, help="simulated-best plans to measure")
    ap.add_argument("--max-load", type=float, default=2.0)
    ap.add_argument("--max-wait", type=float, default=300.0, help="seconds to wait for quiet")
    ap.add_argument("--round-wait", type=float, default=90.0,
                    help="seconds to wait for quiet before each later round of repeats")
    ap.add_argument("--max-steal", type=float, default=5.0,
                    help="CPU steal %% above which a run is run again")
    ap.add_argument("--attempts", type=int, default=3, help="runs at most, per measurement")
    args = ap.parse_args()
    repeats, top = (2, 2) if args.quick else (max(2, args.repeats), args.top)
    models = ["vgg5"] if args.quick else list(MODELS)
    nets = ["4G"] if args.quick else list(NETWORKS)
    started = time.perf_counter()
    load0 = wait_for_quiet(args.max_load, args.max_wait)

    cases, profile_s = [], {}
    for model in models:
        prof, profile_s[model] = profile(model)
        prof.to_csv(RESULTS / f"planner{'.quick' if args.quick else ''}.{model}.profile.csv")
        for net in nets:
            cases.append(plan_case(model, net, prof, top))
            c = cases[-1]
            console.print(f"[dim]{model} {net}: planner {describe(c['best'], c['plans'])}, "
                          f"measuring {len(c['plans'])} plans[/dim]")

    times: dict[tuple[int, Any], list[float]] = {}
    run_steal: dict[tuple[int, Any], list[float]] = {}
    run_probe: dict[tuple[int, Any], list[float]] = {}
    probe = SpeedProbe(duration_s=0.5)
    loads, steals, retried = [load0], [], 0
    for r in range(repeats):
        if r:  # let the machine settle again between rounds (bounded)
            loads.append(wait_for_quiet(args.max_load, args.round_wait))
        for i, c in enumerate(cases):
            order = list(c["plans"].items())
            order = order[r % len(order):] + order[:r % len(order)]
            for k, plan in order:
                shape, norm = MODELS[c["model"]]
                before = probe(c["model"], shape, norm)
                res = run_calm(c["doc"], plan, args.max_steal, args.attempts)
                speed = (before + probe(c["model"], shape, norm)) / 2
                run_probe.setdefault((i, k), []).append(speed)
                times.setdefault((i, k), []).append(steady_epoch_time(res))
                run_steal.setdefault((i, k), []).append(res["steal_pct"])
                retried += len(res["steal_attempts"]) - 1
                loads.append(os.getloadavg()[0])
                steals.append(res["steal_pct"])
                console.print(f"[dim]{r + 1}/{repeats} {c['model']} {c['net']} "
                              f"{describe(k, c['plans'])}: {times[(i, k)][-1]:.3f} s "
                              f"(simulated {c['sim'][k]:.3f}), load {loads[-1]:.2f}, "
                              f"steal {steals[-1]:.1f}%, probe {1e3 * speed:.1f} ms[/dim]")

    probes_of = {m: [v for (i, _), vs in run_probe.items() if cases[i]["model"] == m
                     for v in vs] for m in models}
    model_probe = {m: median(vs) for m, vs in probes_of.items()}
    rows, detail = [], []
    for i, c in enumerate(cases):
        measured = {k: median(times[(i, k)]) for k in c["plans"]}
        opt = min(measured, key=lambda k: measured[k])
        t_plan, t_opt = measured[c["best"]], measured[opt]
        case_times = {k: times[(i, k)] for k in c["plans"]}
        picked, held_out = held_out_score(case_times, c["best"])
        ref = model_probe[c["model"]]
        steady = {k: [t * ref / v for t, v in zip(ts, run_probe[(i, k)], strict=True)]
                  for k, ts in case_times.items()}
        _, held_out_n = held_out_score(steady, c["best"])
        picked_p, held_out_p = paired_held_out_score(case_times, c["best"])
        planning = profile_s[c["model"]] + c["plan_s"]
        full_planning = profile_s[c["model"]] + c["full_plan_s"]
        full_epoch = t_plan / ITERS * c["full_iters"]
        rows.append({
            "model": c["model"], "network": c["net"],
            "planner's plan": describe(c["best"], c["plans"]),
            "sim rank": c["rank"][c["best"]],
            "selected (1st half)": describe(picked, c["plans"]),
            "held-out score": held_out,
            "held-out, speed-normalized": held_out_n,
            "held-out, paired": held_out_p,
            "selected, paired": describe(picked_p, c["plans"]),
            "T_plan_s": t_plan,
            "measured best": describe(opt, c["plans"]), "T_opt_s": t_opt,
            "score": t_opt / t_plan, "same plan": opt == c["best"],
            "score (min)": min(min(times[(i, k)]) for k in c["plans"])
            / min(times[(i, c["best"])]),
            "beyond noise": opt != c["best"]
            and max(times[(i, opt)]) < min(times[(i, c["best"])]),
            "planning_s": planning, "planning_pct_epoch": 100 * planning / t_plan,
            "planning_full_s": full_planning,
            "planning_pct_full_epoch": 100 * full_planning / full_epoch,
        })
        for k in c["plans"]:
            detail.append({"model": c["model"], "network": c["net"],
                           "plan": describe(k, c["plans"]), "sim rank": c["rank"][k],
                           "simulated_s": c["sim"][k], "measured_s": measured[k],
                           "runs": ", ".join(f"{t:.3f}" for t in times[(i, k)]),
                           "steal_pct": ", ".join(f"{v:.1f}" for v in run_steal[(i, k)]),
                           "probe_ms": ", ".join(f"{1e3 * v:.1f}" for v in run_probe[(i, k)]),
                           "planner's": k == c["best"]})

    scores = [r["score"] for r in rows]
    ones = sum(1 for r in rows if r["same plan"])
    worst_pct = max(r["planning_pct_epoch"] for r in rows)
    worst_full = max(r["planning_pct_full_epoch"] for r in rows)
    probe_r = probe_correlation(times, run_probe)
    summary = [
        *score_targets([r["held-out score"] for r in rows], "min held-out score",
                       "cases with held-out score = 1 (%)"),
        {"metric": "min score, all repeats (best-of-k, biased low)", "value": min(scores),
         "target": ">= 0.97", "met": min(scores) >= 0.97},
        {"metric": "cases with score = 1, all repeats (%)", "value": 100 * ones / len(rows),
         "target": ">= 80", "met": ones / len(rows) >= 0.8},
        *score_targets([r["held-out, speed-normalized"] for r in rows],
                       "(diagnostic) min held-out score, speed-normalized",
                       "(diagnostic) held-out = 1, speed-normalized (%)"),
        *score_targets([r["held-out, paired"] for r in rows],
                       "(diagnostic) min held-out score, rounds paired",
                       "(diagnostic) held-out = 1, rounds paired (%)"),
        {"metric": "(diagnostic) probe_r: run spread vs machine speed", "value": probe_r,
         "target": "-", "met": "-"},
        {"metric": "planning / measured (short) epoch, max %", "value": worst_pct,
         "target": "<= 30", "met": worst_pct <= 30},
        {"metric": "planning / full-size epoch, max %", "value": worst_full,
         "target": "<= 30", "met": worst_full <= 30},
    ]
    solve = resnet101_solve()
    when = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    show("planner: score = T_opt / T_plan (measured: median of epochs 2-6, median of repeats)",
         rows)
    show("every plan measured", detail)
    show("summary", summary, 2)
    if solve:
        show("resnet101 ILP, 35 layers into 5 parts, CBC (from planner_solve.json)", solve)
    meta = {"date": when, "owners": K, "batch": BATCH, "iterations": ITERS,
            "owner_compute_scale": OWNER_SCALE, "repeats": repeats, "top": top,
            "quick": args.quick, "profile_s": profile_s,
            "full_size": {f"{c['model']} {c['net']}": {"plan_s": c["full_plan_s"],
                                                       "plan": c["full_plan"],
                                                       "iterations": c["full_iters"]}
                          for c in cases},
            "plan_space": {f"{c['model']} {c['net']}": c["space"] for c in cases},
            "load_1min": {"start": load0, "max": max(loads), "median": median(loads)},
            "steal_pct": {"median": median(steals), "max": max(steals)},
            "probe_s": {m: {"median": median(vs), "min": min(vs), "max": max(vs)}
                        for m, vs in probes_of.items()},
            "max_steal_pct": args.max_steal, "attempts": args.attempts, "runs_retried": retried,
            "summary": summary, "resnet101_solve": solve,
            "wall_s": time.perf_counter() - started}
    name = "planner.quick" if args.quick else "planner"
    save(name, rows, meta)
    save(f"{name}.plans", detail, {"date": when})
    text = (f"Measured {when}, {repeats} repeat(s), 1-min load {load0:.2f} at start, max "
            f"{max(loads):.2f}; CPU steal per run median {median(steals):.1f}%, max "
            f"{max(steals):.1f}% ({retried} runs repeated for steal); whole run "
            f"{meta['wall_s']:.0f} s.\n\n" + markdown(rows) + "\n\n"
            + markdown(summary, 2) + "\n\n" + markdown(detail) + "\n")
    if solve:
        text += "\n" + markdown(solve) + "\n"
    (RESULTS / f"{name}.md").write_text(text)
    console.print(f"whole run {meta['wall_s']:.0f} s; wrote {RESULTS / name}.*")


def score_targets(scores: list[float], min_name: str, ones_name: str) -> list[dict[str, Any]]:
    """The two summary rows of a score: its minimum (>= 0.97) and the share of cases = 1
    (>= 80%)."""
    ones = sum(1 for v in scores if v == 1.0)
    return [{"metric": min_name, "value": min(scores), "target": ">= 0.97",
             "met": min(scores) >= 0.97},
            {"metric": ones_name, "value": 100 * ones / len(scores), "target": ">= 80",
             "met": ones / len(scores) >= 0.8}]


def held_out_score(runs: dict[Any, list[float]], planned: Any) -> tuple[Any, float]:
    """The plan the first half of the rounds measures fastest (median), and min(1, its
    median / the planned plan's median) over the second half."""
    half = len(runs[planned]) // 2
    first = {k: median(ts[:half]) for k, ts in runs.items()}
    picked = min(first, key=lambda k: first[k])
    return picked, min(1.0, median(runs[picked][half:]) / median(runs[planned][half:]))


def paired_held_out_score(runs: dict[Any, list[float]], planned: Any) -> tuple[Any, float]:
    """`held_out_score` with the rounds paired: a case's plans run back to back in a round,
    so a run is compared with the runs of its own round, and drift of the machine's speed
    from round to round cancels.

    The first half of the rounds selects the plan with the smallest median of its time over
    the geometric mean of the case's times in the same round; the score is min(1, the
    median over the second half of T_selected / T_planned, both of the same round).
    """
    rounds = len(runs[planned])
    half = rounds // 2
    level = [math.exp(statistics.fmean(math.log(ts[r]) for ts in runs.values()))
             for r in range(rounds)]
    first = {k: median(ts[r] / level[r] for r in range(half)) for k, ts in runs.items()}
    picked = min(first, key=lambda k: first[k])
    ratio = median(runs[picked][r] / runs[planned][r] for r in range(half, rounds))
    return picked, min(1.0, ratio)


def probe_correlation(times: dict[Any, list[float]], probes: dict[Any, list[float]]) -> float:
    """Pearson correlation over runs of log(run / its plan's median) with log(probe / the
    plan's median probe): near 1 when the machine's speed explains the run-to-run spread."""
    xs, ys = [], []
    for key, ts in times.items():
        t_mid, p_mid = median(ts), median(probes[key])
        for t, v in zip(ts, probes[key], strict=True):
            xs.append(math.log(v / p_mid))
            ys.append(math.log(t / t_mid))
    if len(xs) < 3 or statistics.pstdev(xs) == 0 or statistics.pstdev(ys) == 0:
        return float("nan")
    return statistics.correlation(xs, ys)


def resnet101_solve() -> list[dict[str, Any]]:
    """The CBC rows of bench/results/planner_solve.json, if bench/planner_solve.py made it."""
    path = RESULTS / "planner_solve.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    rows = data["rows"] if isinstance(data, dict) else data
    return [{"scenario": r["scenario"], "cuts": str(r.get("cuts")), "status": r.get("status"),
             "solve_s": r.get("solve_s"), "optimal": r.get("optimal"),
             "met (<= 5 s)": r.get("target_met")} for r in rows if r.get("solver") == "cbc"]


if __name__ == "__main__":
    main()
