"""Epoch time and idle time of FL, SFL, PiPar and MP-SL for vgg5, resnet18 and
mobilenetv3_small under 4G, 4G+ and WiFi (PiPar's Figs. 4 and 6), with the timelines of one
FL, one SFL and one PiPar run (measured beside simulated).

bench/epoch_time.py's experiment for three models, with its functions and definitions: K = 4
emulated Raspberry Pi 3B owners (`compute_scale` from this host's single-thread GFLOP/s on
vgg5, `epoch_time.rpi3b_scale`: one device speed for every model), one server (this host, one
thread), B = 32, SGD with momentum 0.9, synthetic 3x32x32 data, 2 epochs. Epoch time: the
median `wall_s` of the epochs after the first; idle: epoch wall time minus processor busy time
per epoch after the first (`epoch_time.entry`). Plans: `mpsl run`'s `plan: auto`
(`resolve_plan`), with one host profile per model (`host_profile`, measured once at the start)
instead of one per (network, mode).

Definitions added here (version 1, fixed before the first run):
- Samples per owner: vgg5 and mobilenetv3_small 160 (5 iterations), resnet18 64 (2: it is 35x
  vgg5's work, and the full run is sized to about 30 minutes on this machine).
- Server idle: the compute node's (SFL, PiPar, MP-SL); in FL, where the server only
  aggregates, the aggregator's (PiPar compares against FL's server so).
- Speed-up over FL: FL's epoch time over PiPar's; server idle ratio: FL's server idle over
  PiPar's; both per (model, network), "up to" = the largest.
- K = 100 (estimates): `planner.simulate` of the same plan (N for every owner) and profile at
  K = 100 owners with the same samples per owner; K = 4 estimates beside the measurements.
- Device speed: `--scale` fixes the owners' compute_scale instead of measuring it at the
  start, for a loaded machine: the full run takes 7.7, bench/results/epoch_time.json's
  (19.2 GFLOP/s on one thread of this host, quiet, over 2.5).
- Timelines: the first repeat of FL, SFL and PiPar of vgg5 under 4G, drawn by mpsl's report
  code (`mpsl.report.write_report`: measured beside simulated) into
  RESULTS/paper_epoch.timeline.{fl,sfl,pipar}.png.

    .venv/bin/python -m bench.paper_epoch [--repeats 1] [--scale S] [--quick] [--results DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import epoch_time as et
from bench import harness, stats
from bench.harness import NETWORKS, Measured, console, parse_doc, run_meta, synthetic
from mpsl.cli.common import resolve_plan
from mpsl.names import AGGREGATOR
from mpsl.plan import Plan, make_plan
from mpsl.training import num_layers
from planner import Estimate, Profile, simulate
from planner.resources import host_profile

MODELS = {"vgg5": 160, "mobilenetv3_small": 160, "resnet18": 64}  # samples per owner
TIMELINE = ("vgg5", "4G", ("FL", "SFL", "PiPar"))
K_PAPER = 100
QUICK_PROFILE = harness.ROOT / "bench" / "quick_profiles" / "paper_epoch_vgg5.csv"
PAPER_FL_SPEEDUP = 34.6  # PiPar Fig. 4: training time, FL over PiPar, up to
PAPER_IDLE_RATIO = 64.1  # PiPar Fig. 6: server idle time, FL over PiPar, up to


def doc_for(model: str, mode: str, net: str, scale: float, epochs: int,
            owners: int = et.K) -> dict[str, Any]:
    """epoch_time's topology of `mode` under `net`, for `model` and `owners`."""
    doc = et.doc_for(mode, net, scale, epochs)
    doc["model"]["name"] = model
    if owners != et.K:
        doc["data_owners"]["count"] = owners
    doc["dataset"] = synthetic(MODELS[model] * owners)
    doc["failure"] = {"timeout_s": 150}  # a loaded machine: long silences are not losses
    return doc


def run_kept(doc: dict[str, Any], plan: Plan | None, keep: Path | None,
             prof: Profile) -> Measured:
    """`harness.run`; with `keep`, the run also draws its report (measured beside simulated)
    and its timeline.png is copied to `keep`."""
    if keep is None:
        return harness.run(doc, plan)
    from mpsl.report import write_report
    from mpsl.trace import read_events
    from nodes.launch import LocalCluster

    with tempfile.TemporaryDirectory(prefix="mpsl-paper-") as tmp:
        path, topo = harness.load_doc(doc, Path(tmp))
        plan = plan or make_plan(topo, num_layers(topo))
        before, started = harness.cpu_jiffies(), time.perf_counter()
        res = LocalCluster(str(path), (), topo, plan, Path(tmp) / "run").run()
        wall = time.perf_counter() - started
        events = read_events(Path(tmp) / "run" / "events.jsonl")
        steal = harness.steal_pct(before, harness.cpu_jiffies())
        est = simulate(topo, plan, prof, epochs=len(res["epochs"]), record=True)
        write_report(Path(tmp) / "run", res, events, est.events or [], est.total_s, topo.chain)
        shutil.copy(Path(tmp) / "run" / "timeline.png", keep)
        return Measured(res, events, steal, wall, [steal])


def estimate(model: str, mode: str, net: str, scale: float, plan: Plan | None,
             prof: Profile, owners: int) -> Estimate:
    """The cost model's epoch of the plan (its N for every owner) at `owners`."""
    topo = parse_doc(doc_for(model, mode, net, scale, 1, owners))
    if plan is None:
        plan = make_plan(topo, num_layers(topo))
    plan = dataclasses.replace(plan, micro_batches=(plan.micro_batches[0],) * owners)
    return simulate(topo, plan, prof)


def simulated_entry(est: Estimate, mode: str, plan: Plan) -> dict[str, Any]:
    """`entry`'s fields from an estimate (`--quick`: the cost model instead of a run)."""
    def idle(node: str) -> float:
        return float(est.epoch_s - est.busy_s.get(node, 0.0))

    owners = [n for n in est.busy_s if n.startswith("owner") and "->" not in n]
    return {"epoch_s": est.epoch_s,
            "server_idle_s": idle(AGGREGATOR if mode == "FL" else "node1"),
            "device_idle_s": stats.median(idle(o) for o in owners),
            "time_over_bound": est.epoch_s / max(est.busy_s.values()), "steal_pct": 0.0,
            "plan": plan.to_json()}


def entry(m: Measured, mode: str) -> dict[str, Any]:
    """`epoch_time.entry`, with FL's server idle taken as its aggregator's."""
    e = et.entry(m)
    if mode == "FL":
        e["server_idle_s"] = stats.idle_per_epoch(m.events, AGGREGATOR, m.walls,
                                                  start=m.results["t_start"])
    return e


def plan_of(doc: dict[str, Any], prof: Profile, quick: bool) -> Plan:
    """`mpsl run`'s plan of `plan: auto` (`resolve_plan` with `prof`); `quick`: the mode's
    fixed cuts of epoch_time with N = 4, not searched."""
    if quick and doc["mode"] != "fl":
        doc = {**doc, "plan": {"cuts": list(et.MODES["MP-SL" if doc["mode"] == "mpsl" else
                                                      "SFL"].get("cuts", (2,))),
                               "micro_batches": 1 if doc["mode"] == "sfl" else 4}}
    return resolve_plan(parse_doc(doc), None, profile=prof)


def grid(model: str, nets: list[str], scale: float, args: argparse.Namespace,
         prof: Profile, loads: list[float]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every (network, mode) of `model`, `args.repeats` times interleaved: the cell rows (with
    the K = 4 and K = 100 estimates) and the raw runs."""
    rows, raw = [], []
    for net in nets:
        plans = {mode: plan_of(doc_for(model, mode, net, scale, args.epochs), prof, args.quick)
                 for mode in et.MODES}
        cell: dict[str, list[dict[str, Any]]] = {m: [] for m in et.MODES}
        for rep in range(args.repeats):
            for mode in et.MODES:
                keep = None
                if (model, net) == TIMELINE[:2] and mode in TIMELINE[2] and rep == 0:
                    keep = harness.results_dir() / f"paper_epoch.timeline.{mode.lower()}.png"
                doc = doc_for(model, mode, net, scale, args.epochs)
                if args.quick:  # the cost model only: no node is started
                    plan = plans[mode]
                    e = simulated_entry(estimate(model, mode, net, scale, plan, prof, et.K),
                                        mode, plan)
                else:
                    e = entry(run_kept(doc, plans[mode], keep, prof), mode)
                cell[mode].append(e)
                loads.append(os.getloadavg()[0])
                raw.append({"model": model, "network": net, "mode": mode, "repeat": rep,
                            "load_1min": loads[-1], **e})
                console.print(f"{model} {net} {mode} rep {rep}: epoch {e['epoch_s']:.2f} s, "
                              f"server idle {e['server_idle_s']:.2f} s, plan "
                              f"{e['plan']['cuts']} N={e['plan']['micro_batches'][0]}, "
                              f"load {loads[-1]:.1f}, steal {e['steal_pct']:.1f}%")
        for r in et.cell_rows(net, cell):
            plan = plans[r["mode"]]
            rows.append({"model": model, **r, "est_K4_s": estimate(
                model, r["mode"], net, scale, plan, prof, et.K).epoch_s,
                "est_K100_s": estimate(model, r["mode"], net, scale, plan, prof,
                                       K_PAPER).epoch_s})
    return rows, raw


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (model, network): FL over PiPar (epoch time, server idle), SFL over PiPar, and the
    K = 100 estimates of the same epoch-time ratios."""
    out = []
    for model, net in dict.fromkeys((r["model"], r["network"]) for r in rows):
        c = {r["mode"]: r for r in rows if r["model"] == model and r["network"] == net}
        p = c["PiPar"]
        out.append({
            "model": model, "network": net,
            "fl_over_pipar": c["FL"]["epoch_s"] / p["epoch_s"],
            "sfl_over_pipar": c["SFL"]["epoch_s"] / p["epoch_s"],
            "mpsl_over_pipar": c["MP-SL"]["epoch_s"] / p["epoch_s"],
            "server_idle_fl_over_pipar": c["FL"]["server_idle_s"] / p["server_idle_s"],
            "est_K100_fl_over_pipar": c["FL"]["est_K100_s"] / p["est_K100_s"],
            "est_K100_sfl_over_pipar": c["SFL"]["est_K100_s"] / p["est_K100_s"]})
    return out


def paper_rows(rat: list[dict[str, Any]], scale: float) -> list[dict[str, Any]]:
    """PiPar's two headline numbers beside ours (the largest over models and networks)."""
    out = []
    for key, fig, metric, paper in (
            ("fl_over_pipar", "PiPar Fig. 4", "training time, FL over PiPar (up to)",
             PAPER_FL_SPEEDUP),
            ("server_idle_fl_over_pipar", "PiPar Fig. 6", "server idle time, FL over PiPar "
                                                          "(up to)", PAPER_IDLE_RATIO)):
        best = max(rat, key=lambda r: r[key])
        ours = best[key]
        out.append({"figure": fig, "metric": metric, "paper": paper, "ours": round(ours, 2),
                    "verdict": "met" if ours >= paper else "not met",
                    "reason": f"{best['model']} under {best['network']}, K = {et.K}"
                    + ("" if ours >= paper else
                       f"; PiPar's gain needs a server much faster than its devices: here the "
                       f"server is one thread of this host, only {scale:.1f}x an emulated "
                       f"device, shared by K = {et.K} owners, so FL over PiPar is at most "
                       f"about {scale:.1f} / ({et.K} x the server's share of the work)")})
    return out


def verdict(rat: list[dict[str, Any]], results: Path, quick: bool) -> str:
    """The verdict in words, from the ratios, and the timelines."""
    fl = [r["fl_over_pipar"] for r in rat]
    sfl = [r["sfl_over_pipar"] for r in rat]
    k100 = [r["est_K100_fl_over_pipar"] for r in rat]
    pngs = sorted(p.name for p in results.glob("paper_epoch.timeline.*.png"))
    how = "cost model" if quick else "measured"
    return (f"PiPar over FL: {min(fl):.2f}-{max(fl):.2f}x; over SFL: {min(sfl):.2f}-"
            f"{max(sfl):.2f}x ({how}, K = {et.K}). At K = {K_PAPER} (cost model, this "
            f"server): FL over PiPar {min(k100):.2f}-{max(k100):.2f}x. Timelines: "
            + (", ".join(pngs) or "none") + ".")


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--scale", type=float, default=None,
                    help="owners' compute_scale (default: measured now, epoch_time.rpi3b_scale)")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    ap.add_argument("--rewrite", action="store_true",
                    help="write the tables again from RESULTS/paper_epoch.json, running nothing")
    ap.add_argument("--append", action="store_true",
                    help="keep the other models' rows of the last results")
    ap.add_argument("--quick", action="store_true",
                    help="vgg5 under 4G, 32 samples per owner, fixed plans, the cost model only "
                         "(no run)")
    harness.results_option(ap)
    return ap.parse_args(argv)


def profile(model: str, net: str, scale: float, args: argparse.Namespace) -> Profile:
    """The host's profile of `model` (3 repeats); a smoke run reads QUICK_PROFILE (vgg5 at
    this benchmark's input, measured once with one repeat: `--quick` checks the code path,
    not the numbers), measuring and keeping it when it is missing."""
    doc = doc_for(model, "PiPar", net, scale, args.epochs)
    if not args.quick:
        return host_profile(parse_doc(doc), 3)
    if QUICK_PROFILE.is_file():
        return Profile.from_csv(QUICK_PROFILE)
    prof = host_profile(parse_doc(doc), 1)
    prof.to_csv(QUICK_PROFILE)
    return prof


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started, loads = time.perf_counter(), [os.getloadavg()[0]]
    nets = ["4G"] if args.quick else args.networks
    models = ["vgg5"] if args.quick else args.models
    if args.quick:
        args.repeats = 1
        MODELS["vgg5"] = 32
    harness.use_results(args.results)
    if args.rewrite:
        doc = json.loads((harness.results_dir() / "paper_epoch.json").read_text())
        m = doc["meta"]
        args.repeats, args.epochs = m["repeats"], m["epochs"]
        write(args, doc["rows"], m["raw"], dict(scale=m["compute_scale"], host=m["host_gflops"],
                                                started=started - m["wall_s"],
                                                loads=[m["load_1min"]["start"],
                                                       m["load_1min"]["max"]]))
        return 0
    scale, host = et.rpi3b_scale()
    if args.scale is not None:  # a device speed fixed from a quiet measurement
        scale, host = args.scale, args.scale * et.RPI3B_GFLOPS
    console.print(f"host {host:.1f} GFLOP/s on one thread -> owners' compute_scale {scale}")
    rows, raw = kept(models, nets) if args.append else ([], [])
    for model in models:  # the tables are written after every model: a cut-off keeps them
        prof = profile(model, nets[0], scale, args)
        r, w = grid(model, nets, scale, args, prof, loads)
        rows, raw = rows + r, raw + w
        write(args, rows, raw, dict(scale=scale, host=host, started=started, loads=loads))
    return 0


def kept(models: list[str], nets: list[str]) -> tuple[list[dict[str, Any]],
                                                      list[dict[str, Any]]]:
    """The rows and raw runs of other (model, network) cells in RESULTS/paper_epoch.json
    (`--append`)."""
    path = harness.results_dir() / "paper_epoch.json"
    if not path.exists():
        return [], []
    doc = json.loads(path.read_text())

    def other(r: dict[str, Any]) -> bool:
        return r["model"] not in models or r["network"] not in nets

    return ([r for r in doc["rows"] if other(r)], [r for r in doc["meta"]["raw"] if other(r)])


def write(args: argparse.Namespace, rows: list[dict[str, Any]], raw: list[dict[str, Any]],
          run: dict[str, Any]) -> None:
    """The tables, the paper rows and the README section of the models run so far."""
    rat = ratios(rows)
    paper = paper_rows(rat, run["scale"])
    steals = [r["steal_pct"] for r in raw]
    loads = run["loads"]
    meta = run_meta(owners=et.K, samples_per_owner=dict(MODELS), batch=et.BATCH,
                    repeats=args.repeats, epochs=args.epochs, compute_scale=run["scale"],
                    host_gflops=run["host"], rpi3b_gflops=et.RPI3B_GFLOPS, raw=raw,
                    models=sorted({r["model"] for r in rows}), quick=args.quick,
                    load_1min={"start": loads[0], "max": max(loads)},
                    steal_pct={"median": stats.median(steals), "max": max(steals)},
                    wall_s=time.perf_counter() - run["started"])
    name = "paper_epoch.quick" if args.quick else "paper_epoch"
    cmd = "python -m bench.paper_epoch" + (" --quick" if args.quick else
                                           f" --repeats {args.repeats}")
    harness.publish(name, cmd, meta, [
        ("", "Epoch and idle time (s; median of repeats); est_K*: the cost model", rows, 2),
        (".ratios", "Ratios to PiPar per model and network (est_K100: estimates)", rat, 2)],
        paper)
    harness.readme_section(name, paper, verdict(rat, harness.results_dir(), args.quick))


if __name__ == "__main__":
    raise SystemExit(main())
