"""Why two_hop runs slower under `--netns` (`python -m bench.netns --diagnose`): the same run
in four variants, to tell the namespaces from the kernel's shaping.

Definitions (version 1, fixed before the first run): bench.netns's `two_hop` case (6 epochs,
128 test samples) in the variants of `bench.netns.started`:
- `process`: links shaped in the process (as `mpsl run`);
- `kernel`: `mpsl run --netns` (namespaces, veths, bridge; links shaped by the kernel: HTB +
  TBF with a burst of two frames or 2 ms, nodes.kernel_links);
- `namespaces`: the same namespaces, veths and bridge, no qdisc, links shaped in the process;
- `kernel_burst`: `kernel` with a TBF burst of 50 ms at each link's rate (>= 64 KiB: an 8 KiB
  message after a pause leaves at once, where the other variants pay its size / rate).
Rounds of the four, the order rotated by one each round (round r starts with variant r mod
4); each run through `bench.netns.calm_run`. A run's epoch: the median `wall_s` of its epochs
after the first; per variant: the median over rounds of its epoch, of its ratio to the same
round's `process` run, and of where its time went (node CPU s, processor-action wall s,
softirq s: bench.netns's columns).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from bench.harness import console, markdown, publish, results_dir, run_meta, steal_summary
from bench.netns import CASES, COMMON, SPENT, VARIANTS, calm_run, epoch_time


def rotated(rnd: int) -> tuple[str, ...]:
    """The variants' order in round `rnd`: VARIANTS started at `rnd` mod 4."""
    k = rnd % len(VARIANTS)
    return VARIANTS[k:] + VARIANTS[:k]


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant: medians over rounds of the epoch, the ratio to `process` and SPENT."""
    base = {r["round"]: r["epoch_s"] for r in runs if r["variant"] == "process"}
    rows = []
    for v in VARIANTS:
        mine = [r for r in runs if r["variant"] == v]
        ratios = [r["epoch_s"] / base[r["round"]] for r in mine]
        rows.append({"variant": v, "rounds": len(mine),
                     "epoch_s": statistics.median(r["epoch_s"] for r in mine),
                     "ratio_to_process": statistics.median(ratios),
                     "ratio_min": min(ratios), "ratio_max": max(ratios),
                     "epoch_min": min(r["epoch_s"] for r in mine),
                     "epoch_max": max(r["epoch_s"] for r in mine),
                     **{k: statistics.median(r[k] for r in mine) for k in SPENT}})
    return rows


def verdict(rows: list[dict[str, Any]]) -> str:
    """The diagnosis in words, from the summary rows."""
    r = {row["variant"]: row for row in rows}

    def says(v: str) -> str:
        return (f"{v} {r[v]['epoch_s']:.3f} s ({r[v]['ratio_to_process']:.2f}x; node CPU "
                f"{r[v]['cpu_s']:.2f} s, processor actions {r[v]['busy_s']:.2f} s, softirq "
                f"{r[v]['softirq_s']:.2f} s)")

    nan = float("nan")
    p, ns, k, kb = (r[v] for v in ("process", "namespaces", "kernel", "kernel_burst"))
    return ("two_hop per epoch, median over rounds: " + "; ".join(says(v) for v in VARIANTS)
            + f". The namespaces, veths and bridge alone: {ns['ratio_to_process']:.2f}x the "
            f"process; the kernel's shaping on top of them: {k['epoch_s'] / ns['epoch_s']:.2f}x, "
            f"with {k['softirq_s'] - ns['softirq_s']:+.2f} s of softirq and "
            f"{k['busy_s'] / ns['busy_s']:.2f}x the processor actions' wall time per run (the "
            f"TBF paces each 1.5 KB frame: a timer, a softirq and a receiver's wake-up per "
            f"frame, on the same 2 cores as the nodes' compute). A 50 ms burst takes those "
            f"back to {kb['softirq_s'] - p['softirq_s']:+.2f} s and "
            f"{kb['busy_s'] / p['busy_s']:.2f}x the process's, but is another link: a message "
            f"under the burst leaves at once after a pause, where a link of that rate takes "
            f"size / rate; its epoch: {kb['ratio_to_process']:.2f}x the process's (rounds "
            f"{kb.get('ratio_min', nan):.2f} to {kb.get('ratio_max', nan):.2f}), "
            + ("so the per-frame work alone does not account for the gap; runs of one variant "
               f"spread as much at this load (process {p.get('epoch_min', nan):.2f} to "
               f"{p.get('epoch_max', nan):.2f} s over the rounds)."
               if kb["ratio_to_process"] > 1.05 else "the gap goes with the per-frame work."))


def diagnose(args: argparse.Namespace) -> int:
    """`bench.netns --diagnose`: the rounds, then RESULTS/netns.diagnose.* (or .quick)."""
    started = time.perf_counter()
    sets = [*COMMON, *CASES["two_hop"]]
    rounds = 1 if args.quick else args.rounds
    if args.quick:
        sets += ["training.epochs=2", "dataset.samples_per_owner=64"]
    runs: list[dict[str, Any]] = []
    for rnd in range(rounds):
        for v in rotated(rnd):
            r = calm_run(sets, v)
            runs.append({"round": rnd, "variant": v, "epoch_s": epoch_time(r["walls"]),
                         "walls": " ".join(f"{w:.3f}" for w in r["walls"]),
                         **{k: r[k] for k in SPENT}, "steal_pct": r["steal_pct"],
                         "load_1min": r["load_1min"]})
            console.print(f"[dim]round {rnd} {v}: {runs[-1]['epoch_s']:.3f} s, load "
                          f"{r['load_1min']:.1f}[/dim]")
    rows = summarize(runs)
    loads = [r["load_1min"] for r in runs]
    meta = run_meta(wall_s=time.perf_counter() - started, quick=args.quick, rounds=rounds,
                    load_1min={"start": loads[0], "max": max(loads)},
                    steal_pct=steal_summary([r["steal_pct"] for r in runs]))
    write(args.quick, meta, rows, runs)
    return 0


def write(quick: bool, meta: dict[str, Any], rows: list[dict[str, Any]],
          runs: list[dict[str, Any]]) -> None:
    """RESULTS/netns.diagnose{.quick}.{csv,json,md}, the .md ending "For bench/README"."""
    name = "netns.diagnose.quick" if quick else "netns.diagnose"
    command = ".venv/bin/python -m bench.netns --diagnose" + (
        " --quick" if quick else f" --rounds {meta['rounds']}")
    publish(name, command, meta, [
        ("", "two_hop in four variants (medians over rounds)", rows, 3),
        (".runs", "every run", runs, 3)])
    with open(results_dir() / f"{name}.md", "a") as f:
        f.write(f"\n## For bench/README\n\n{markdown(rows, 3)}\n\n{verdict(rows)}\n")


def republish(quick: bool) -> int:
    """`--diagnose --republish`: the files of the last run again, from its runs' JSON."""
    name = "netns.diagnose.quick" if quick else "netns.diagnose"
    doc = json.loads((results_dir() / f"{name}.json").read_text())
    runs = json.loads((results_dir() / f"{name}.runs.json").read_text())["rows"]
    write(quick, doc["meta"], summarize(runs), runs)  # the summary anew, from the runs
    return 0
