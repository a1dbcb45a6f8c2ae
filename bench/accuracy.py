"""Accuracy parity on real MNIST (issue 21, experiment 3): FL, SFL, PiPar and MP-SL trained with
the same data, epochs and seeds, IID and non-IID (Dirichlet alpha = 0.5) (PiPar's Table V and
Fig. 8: PiPar's accuracy differs from the baselines' by -0.2 to +2.07 points).

Setup (version 2: version 1's with seeds 0, 1 and 2 instead of 0 alone): vgg5 with GroupNorm (no
batch statistics, so a split, micro-batched iteration computes the unsplit update: the modes
differ by float rounding and by nothing else), real MNIST (../shared/data/mnist), K = 4 owners x
1000 training samples (the first 1000 of each owner's share; `dataset.partition` iid or
dirichlet with alpha 0.5 and the run's seed), B = 32, SGD lr 0.02 momentum 0.9, one aggregation
per epoch, 3 epochs, seeds 0, 1 and 2 for every mode (`training.seed` and `dataset.seed` alike;
`--seeds` for others), unshaped loopback links, `compute_scale` 1 (time is not measured here),
an owner lost only after 600 s of silence (`harness.patient`: the shared machine's load starves
heartbeats). Plans are fixed: FL (the whole model on the owners), SFL (cut 2, N = 1), PiPar (cut
2, N = 4), MP-SL (cuts 1 and 3, N = 4, labels kept by the owners).

Metric (defined once): test accuracy = the aggregated model's accuracy on the first 2000 MNIST
test images after the last epoch (results.json `final_test_accuracy`); validation loss = its
mean cross-entropy on the same images after each epoch (`epochs[].test_loss`). A difference is
in points (percentage points) of the median over seeds; the paper's range is met when every
mode's difference from FL and from SFL lies within +-2.07 points (its largest).

Scale: the full run is 24 runs (4 modes x 2 partitions x 3 seeds) of 4000 samples x 3 epochs,
about 15 min on this 2-core machine at a 1-minute load of 3-9;
PiPar's runs had 60,000 samples and more epochs. Nothing is extrapolated to K = 100: the cost
model estimates time, not accuracy. `--quick`: PiPar alone, IID, 2 owners x 64 samples, 1 epoch,
200 test images.

    .venv/bin/python -m bench.accuracy [--quick] [--results DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench import harness, stats
from bench.harness import publish, run, run_meta, topology

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
MODES: dict[str, dict[str, Any]] = {
    "FL": {"mode": "fl", "cuts": (2,), "micro_batches": 1},
    "SFL": {"mode": "sfl", "cuts": (2,), "micro_batches": 1},
    "PiPar": {"mode": "pipar", "cuts": (2,), "micro_batches": 4},
    "MP-SL": {"mode": "mpsl", "cuts": (1, 3), "micro_batches": 4, "labels": "local"},
}
PARTITIONS = {"IID": {"partition": "iid"}, "Dirichlet 0.5": {"partition": "dirichlet",
                                                             "alpha": 0.5}}
FULL = {"owners": 4, "samples": 1000, "epochs": 3, "test": 2000, "seeds": (0, 1, 2),
        "modes": tuple(MODES), "partitions": tuple(PARTITIONS)}
QUICK = {"owners": 2, "samples": 64, "epochs": 1, "test": 200, "seeds": (0,),
         "modes": ("PiPar",), "partitions": ("IID",)}
PAPER_RANGE = (-0.2, 2.07)  # PiPar's Table V: PiPar's accuracy minus a baseline's, points
BATCH = 32


def doc_for(mode: str, part: str, seed: int, size: dict[str, Any]) -> dict[str, Any]:
    m = dict(MODES[mode])
    data = {"name": "mnist", "root": str(MNIST), "samples_per_owner": size["samples"],
            "test_samples": size["test"], "seed": seed, **PARTITIONS[part]}
    doc = topology(owners=size["owners"], compute=1, mode=m["mode"], model="vgg5",
                   norm="group", dataset=data,
                   training={"epochs": size["epochs"], "batch_size": BATCH, "lr": 0.02,
                             "momentum": 0.9, "seed": seed},
                   up=None, down=None, cuts=m["cuts"], micro_batches=m["micro_batches"],
                   labels=m.get("labels", "shared"))
    return harness.patient(doc)


def run_rows(size: dict[str, Any]) -> list[dict[str, Any]]:
    """Every run: final accuracy and the validation loss after each epoch."""
    rows = []
    for seed in size["seeds"]:
        for part in size["partitions"]:
            for mode in size["modes"]:
                m = run(doc_for(mode, part, seed, size))
                eps = m.results["epochs"]
                rows.append({"partition": part, "mode": mode, "seed": seed,
                             "test_accuracy": m.results["summary"]["final_test_accuracy"],
                             "val_loss": [e["test_loss"] for e in eps],
                             "steal_pct": m.steal_pct, "wall_s": m.wall_s})
                print(f"{part} {mode} seed {seed}: accuracy "
                      f"{rows[-1]['test_accuracy']:.4f}, validation loss "
                      f"{[round(x, 4) for x in rows[-1]['val_loss']]}", flush=True)
    return rows


def summary_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per partition and mode: median accuracy over seeds, and its difference (points) from
    FL's and SFL's."""
    acc = {(r["partition"], r["mode"]): stats.median(x["test_accuracy"] for x in rows
                                                     if (x["partition"], x["mode"])
                                                     == (r["partition"], r["mode"]))
           for r in rows}
    out = []
    for (part, mode), a in acc.items():
        row: dict[str, Any] = {"partition": part, "mode": mode, "accuracy_pct": 100 * a}
        for base in ("FL", "SFL"):
            b = acc.get((part, base))
            row[f"vs {base} (points)"] = "-" if b is None else 100 * (a - b)
        last = [x["val_loss"][-1] for x in rows if (x["partition"], x["mode"]) == (part, mode)]
        row["final val_loss"] = stats.median(last)
        out.append(row)
    return out


def paper_rows(summary: list[dict[str, Any]], rows: list[dict[str, Any]],
               partitions: tuple[str, ...]) -> list[dict[str, Any]]:
    """The paper-table rows: the accuracy differences per partition, and the curves."""
    out = []
    for part in partitions:
        diffs = [r[f"vs {b} (points)"] for r in summary if r["partition"] == part
                 for b in ("FL", "SFL") if isinstance(r[f"vs {b} (points)"], float)]
        lo, hi = (min(diffs), max(diffs)) if diffs else (float("nan"), float("nan"))
        within = bool(diffs) and max(abs(d) for d in diffs) <= PAPER_RANGE[1]
        iid = part == "IID"
        out.append({
            "figure": "PiPar Table V", "metric": f"test accuracy, every mode minus FL and SFL, "
            f"points ({part})", "paper": "-0.2 to +2.07", "ours": f"{lo:+.2f} to {hi:+.2f}",
            "verdict": ("met" if within else "not met") if iid else "not comparable",
            "reason": ("same function by construction (GroupNorm, averaged micro-batch "
                       "losses): the modes differ by float rounding only" if within else
                       "a difference beyond 2.07 points: see accuracy.md")
            if iid else "the paper's range is for IID data; ours under Dirichlet 0.5"})
    gaps = _val_gap(rows)
    out.append({"figure": "PiPar Fig. 8", "metric": "validation loss per epoch, largest gap "
                "between modes (same partition and seed)", "paper": "curves coincide",
                "ours": f"{gaps:.4f}", "verdict": "not comparable",
                "reason": "the paper draws curves, gives no number; ours in accuracy.png"})
    return out


def _val_gap(rows: list[dict[str, Any]]) -> float:
    gap = 0.0
    keys = {(r["partition"], r["seed"]) for r in rows}
    for key in keys:
        curves = [r["val_loss"] for r in rows if (r["partition"], r["seed"]) == key]
        for i in range(min(len(c) for c in curves)):
            gap = max(gap, max(c[i] for c in curves) - min(c[i] for c in curves))
    return gap


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Validation loss per epoch, one panel per partition, one line per mode and seed."""
    from mpsl.report.figure import pyplot, save

    plt = pyplot()
    parts = list(dict.fromkeys(r["partition"] for r in rows))
    fig, axes = plt.subplots(1, len(parts), figsize=(6 * len(parts), 4), squeeze=False)
    for ax, part in zip(axes[0], parts):
        for r in (x for x in rows if x["partition"] == part):
            xs = range(1, len(r["val_loss"]) + 1)
            ax.plot(xs, r["val_loss"], marker="o", linestyle="-" if r["seed"] == 0 else "--",
                    label=f"{r['mode']} seed {r['seed']}")
        ax.set(xlabel="epoch", ylabel="validation loss (2000 MNIST test images)",
               title=f"vgg5 on MNIST, {part}")
        ax.legend(fontsize="small")
    save(fig, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="PiPar alone, IID, tiny")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 (--quick: 0)")
    harness.results_option(ap)
    args = ap.parse_args(argv)
    if not MNIST.is_dir():
        raise SystemExit(f"error: no MNIST at {MNIST}")
    out = harness.use_results(args.results)
    size = dict(QUICK if args.quick else FULL)
    if args.seeds:
        size["seeds"] = tuple(args.seeds)
    started = time.perf_counter()
    rows = run_rows(size)
    summary = summary_rows(rows)
    name = "accuracy.quick" if args.quick else "accuracy"
    plot(rows, out / f"{name}.png")
    meta = run_meta(quick=args.quick, size={k: list(v) if isinstance(v, tuple) else v
                                            for k, v in size.items()},
                    wall_s=time.perf_counter() - started)
    runs = [{**r, "val_loss": ", ".join(f"{x:.4f}" for x in r["val_loss"])} for r in rows]
    command = "python -m bench.accuracy" + (" --quick" if args.quick else "")
    publish(name, command, meta, [
        ("", "test accuracy, median over seeds; differences in points", summary, 3),
        (".runs", "every run (validation loss after each epoch)", runs, 4)],
        paper=paper_rows(summary, rows, size["partitions"]))
    with open(out / f"{name}.md", "a") as fh:
        fh.write(readme_section(name, summary, paper_rows(summary, rows, size["partitions"])))
    return 0


def readme_section(name: str, summary: list[dict[str, Any]],
                   paper: list[dict[str, Any]]) -> str:
    return (f"\n![validation loss]({name}.png)\n\n## For bench/README\n\n"
            f"{harness.markdown(summary, 2)}\n\n{harness.markdown(paper, 2)}\n")


if __name__ == "__main__":
    raise SystemExit(main())
