"""Differential privacy's cost: epoch time with classic DP against without on FL, SFL and PiPar
(PiPar's Fig. 13), and test accuracy with and without DP on real MNIST.

Definitions (version 1, fixed before the first run):
- **Classic DP** (mpsl.privacy): every owner clips its update to L2 norm C = 1 and adds
  Gaussian noise of std sigma * C before it uploads; the aggregator accounts (epsilon,
  delta = 1e-5) after each aggregation (user-level, q = 1). Model vgg5 with GroupNorm (no
  buffers: DP covers the whole owner-side state), real MNIST, B = 32, SGD lr 0.02 momentum
  0.9, seed 0, one aggregation per epoch, K = 2 owners and one server. Plans are fixed: FL
  (the whole model on the owners), SFL (cut 2, N = 1), PiPar (cut 2, N = 4).
- **Overhead.** 320 samples per owner (10 iterations per epoch), 3 epochs, 500 test images,
  unshaped loopback links, `compute_scale` 1; a run's epoch time is the mean `wall_s` of
  epochs 2-3 (epoch 1 holds the warm-up). DP: sigma = 1. Each repeat runs every mode with DP
  off and on back to back, the order alternating by repeat; per mode, overhead = median over
  repeats of (on - off) seconds per epoch (paired within a repeat), and in percent of the
  median off time. **Target: <= 0.16 s per epoch on every mode** (PiPar's Fig. 13: classic DP
  costs PiPar at most 0.16 s per epoch, FL up to 11.7 s).
- **Direct cost.** In one process, `privatize` (clip and noise) of each mode's owner-side
  parameters at init, and the accountant (`spent` after 100 aggregations): median of 20
  calls after 3 warm-up calls. This is the work DP adds per owner and per aggregation.
- **Accuracy.** 1500 samples per owner, 2 epochs, the first 2000 test images; DP off,
  sigma = 0.01 and sigma = 1 (both C = 1), one run each; the final test accuracy and the
  epsilon of results.json.
Nothing is fitted. The machine may be shared: the run waits (bounded) for a 1-minute load
below `--max-load` before it starts and before each repeat, and records the load after each
run.

    .venv/bin/python -m bench.dp [--quick] [--repeats 5] [--max-load 2] [--max-wait 120]
        [--results DIR]

`--quick` (a smoke run): the direct cost (3 calls each), PiPar alone with DP off and on (2
epochs of one iteration), and one accuracy run of PiPar at sigma = 1 (64 samples, 2 epochs,
100 test images).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from bench import harness, paper_rows, stats
from bench.harness import parse_doc, publish, run, run_meta, topology, wait_for_quiet
from mpsl.models import split_model
from mpsl.privacy import generator, privatize, spent
from mpsl.topology import PrivacySpec
from mpsl.training import build_full_model

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
OWNERS, BATCH, CLIP, DELTA = 2, 32, 1.0, 1e-5
MODES: dict[str, dict[str, Any]] = {
    "FL": {"mode": "fl", "cuts": (2,), "micro_batches": 1},
    "SFL": {"mode": "sfl", "cuts": (2,), "micro_batches": 1},
    "PiPar": {"mode": "pipar", "cuts": (2,), "micro_batches": 4},
}
TARGET_S = 0.16
LOADS: list[float] = []  # the 1-minute load average after each run (the machine is shared)
STEALS: list[float] = []  # CPU steal during each run


def _run(doc: dict[str, Any]) -> dict[str, Any]:
    m = run(doc)
    LOADS.append(os.getloadavg()[0])
    STEALS.append(m.steal_pct)
    return {"results": m.results, "epoch_s": stats.mean_after_warmup(m.walls),
            "steal_pct": m.steal_pct}


def _doc(mode: str, sigma: float | None, samples: int, epochs: int,
         test: int, iterations: int | None = None) -> dict[str, Any]:
    m = MODES[mode]
    doc = topology(owners=OWNERS, compute=1, mode=m["mode"], model="vgg5", norm="group",
                   dataset={"name": "mnist", "root": str(MNIST), "samples_per_owner": samples,
                            "test_samples": test},
                   training={"epochs": epochs, "batch_size": BATCH, "lr": 0.02,
                             "momentum": 0.9, "seed": 0,
                             **({"max_iterations": iterations} if iterations else {})},
                   up=None, down=None, cuts=m["cuts"], micro_batches=m["micro_batches"])
    if sigma is not None:
        doc["privacy"] = {"clip_norm": CLIP, "noise_multiplier": sigma, "delta": DELTA}
    return doc


def overhead_rows(repeats: int, epochs: int, max_load: float, wait_s: float,
                  quick: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every run's epoch time; and per mode the paired overhead of DP (sigma = 1)."""
    runs: list[dict[str, Any]] = []
    modes = ["PiPar"] if quick else list(MODES)
    for r in range(repeats):
        wait_for_quiet(max_load, wait_s)
        for mode in modes:
            for dp in (("off", "on") if r % 2 == 0 else ("on", "off")):
                m = _run(_doc(mode, 1.0 if dp == "on" else None, 10 * BATCH, epochs, 500,
                              1 if quick else None))
                runs.append({"repeat": r + 1, "mode": mode, "dp": dp, "epoch_s": m["epoch_s"],
                             "steal_pct": m["steal_pct"], "load_1min": LOADS[-1]})
                print(f"repeat {r + 1} {mode} dp {dp}: {runs[-1]['epoch_s']:.3f} s", flush=True)
    summary = []
    for mode in modes:
        off = {x["repeat"]: x["epoch_s"] for x in runs if x["mode"] == mode and x["dp"] == "off"}
        on = {x["repeat"]: x["epoch_s"] for x in runs if x["mode"] == mode and x["dp"] == "on"}
        diffs = [on[k] - off[k] for k in sorted(off)]
        over = statistics.median(diffs)
        summary.append({"mode": mode, "off_s": statistics.median(off.values()),
                        "on_s": statistics.median(on.values()), "overhead_s": over,
                        "overhead_pct": 100 * over / statistics.median(off.values()),
                        "per_repeat_s": ", ".join(f"{d:+.3f}" for d in diffs),
                        "target_s": f"<= {TARGET_S:g}", "met": over <= TARGET_S})
    return runs, summary


def _median_time(fn: Any, calls: int = 20, warm: int = 3) -> float:
    for _ in range(warm):
        fn()
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def direct_rows(calls: int = 20) -> list[dict[str, Any]]:
    """In-process: clip and noise of each mode's owner-side parameters; the accountant
    (medians of `calls` calls)."""
    torch.set_num_threads(1)
    topo = parse_doc(_doc("PiPar", 1.0, 10 * BATCH, 1, 500))
    full = build_full_model(topo)
    rows = []
    for mode, m in MODES.items():
        owner = full if m["mode"] == "fl" else split_model(full, list(m["cuts"]))[0]
        ref = {k: v.detach().clone() for k, v in owner.named_parameters()}
        state = {k: v + 0.01 for k, v in ref.items()}
        seconds = _median_time(lambda s=state, r=ref: privatize(s, r, CLIP, 1.0, generator(0)),
                               calls)
        rows.append({"what": f"privatize, {mode} owner part", "parameters": sum(
            v.numel() for v in ref.values()), "ms": 1000 * seconds})
    spec = PrivacySpec(clip_norm=CLIP, noise_multiplier=1.0, delta=DELTA)
    rows.append({"what": "accountant: spent after 100 aggregations", "parameters": 0,
                 "ms": 1000 * _median_time(lambda: spent(spec, 100), calls)})
    return rows


def accuracy_rows(samples: int, epochs: int, test: int,
                  quick: bool = False) -> list[dict[str, Any]]:
    rows = []
    for mode in ["PiPar"] if quick else MODES:
        for sigma in (1.0,) if quick else (None, 0.01, 1.0):
            res = _run(_doc(mode, sigma, samples, epochs, test))["results"]
            eps = res.get("privacy", {}).get("epsilon")
            rows.append({"mode": mode, "sigma": "off" if sigma is None else f"{sigma:g}",
                         "clip_norm": "-" if sigma is None else f"{CLIP:g}",
                         "epsilon": "-" if sigma is None else (
                             "inf" if eps is None else f"{eps:.4g}"),
                         "delta": "-" if sigma is None else f"{DELTA:g}",
                         "test_accuracy": res["summary"]["final_test_accuracy"]})
            print(f"accuracy {mode} sigma {sigma}: {rows[-1]['test_accuracy']:.4f}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one repeat, short accuracy runs")
    ap.add_argument("--repeats", type=int, default=5, help="paired repeats of the epoch runs")
    ap.add_argument("--max-load", type=float, default=2.0, help="1-minute load to wait for")
    ap.add_argument("--max-wait", type=float, default=120.0, help="seconds to wait at most")
    harness.results_option(ap)
    args = ap.parse_args(argv)
    harness.use_results(args.results)
    if not MNIST.is_dir():
        raise SystemExit(f"error: no MNIST at {MNIST}")
    started = time.perf_counter()
    load = wait_for_quiet(args.max_load, args.max_wait)
    direct = direct_rows(3 if args.quick else 20)
    runs, summary = overhead_rows(1 if args.quick else args.repeats, 2 if args.quick else 3,
                                  args.max_load, args.max_wait / 4, args.quick)
    accuracy = accuracy_rows(*((64, 2, 100) if args.quick else (1500, 2, 2000)), args.quick)
    meta = run_meta(wall_s=time.perf_counter() - started, quick=args.quick,
                    load_1min={"start": load, "max": max(LOADS, default=load)},
                    steal_pct={"median": statistics.median(STEALS or [0.0]),
                               "max": max(STEALS, default=0.0)})
    name = "dp.quick" if args.quick else "dp"
    command = ".venv/bin/python -m bench.dp" + (" --quick" if args.quick else "")
    publish(name, command, meta, [
        ("", "classic DP's epoch-time overhead, sigma = 1 (mean of epochs 2-3)", summary, 3),
        (".direct", "the work DP adds, in one process", direct, 3),
        (".accuracy", "final test accuracy on MNIST, with and without DP", accuracy, 4),
        (".runs", "every run", runs, 3)], paper=paper_rows.dp(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
