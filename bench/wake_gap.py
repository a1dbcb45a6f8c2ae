"""Wake-up cost against the idle gap before a pass, and what it does to the cost model's error.

A pass that follows an idle (or, on an emulated device, sleeping) processor costs more than a
warm one: caches, TLB and the core's clock have to come back. `measure_profile` measures that
cost (`wake_fwd_s`, `wake_bwd_s`) after `wake_gap_s` of sleep, as the median over layers and
batch sizes. Emulated devices sleep (compute_scale - 1) x every pass, often tens of ms, so the
gap matters. For each gap this script reports:

- the profile's wake-up cost, measured with that gap (vgg5, batch sizes 1, 2, 4, ..., 32, as in
  bench/cost_model.py);
- the extra CPU time of a whole owner part (vgg5 layers [0:2), as in the cost-model runs) at
  micro-batches 8 and 32 after that gap, against back-to-back passes: what the runtime meets;
- the cost model's error on bench/cost_model.py's configurations when the profile of its last
  run (results/cost_model.profile.csv) gets this gap's wake-up cost, against the epoch times
  that run measured (results/cost_model.json). Nothing is run again: only the estimate moves.
  Only the cost model's IN_SAMPLE configurations enter: `WAKE_GAP_S` (50 ms) was chosen from
  this what-if on them (2026-12-03), and the HELD_OUT ones stay out so that a constant
  chosen here never sees them.

    .venv/bin/python -m bench.wake_gap [--gaps 0.001 0.01 0.05] [--passes 40]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from typing import Any

from bench import cost_model, harness, stats
from bench.harness import RESULTS, console, markdown, run_meta, save, show
from planner import Profile, measure_profile


def part_wake(layers: int, batch: int, gaps: list[float],
              passes: int) -> dict[float, tuple[float, float]]:
    """Extra CPU seconds of a forward and a backward of vgg5's first `layers` layers at
    `batch`, for every gap of sleep before each pass, over back-to-back passes (medians)."""
    import torch

    from mpsl.allocator import keep_freed_memory
    from mpsl.models import build_model

    keep_freed_memory()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    c, h, _ = cost_model.SHAPE
    model = build_model(cost_model.MODEL, cost_model.CLASSES, c, h, "batch").train()
    part = torch.nn.Sequential(*list(model.children())[:layers])
    x = torch.rand(batch, *cost_model.SHAPE)

    def median_pass(gap: float) -> tuple[float, float]:
        fwd, bwd = [], []
        for i in range(passes + 5):
            if gap:
                time.sleep(gap)
            c0 = time.thread_time()
            out = part(x)
            c1 = time.thread_time()
            if gap:
                time.sleep(gap)
            c2 = time.thread_time()
            out.backward(torch.ones_like(out))
            c3 = time.thread_time()
            if i >= 5:  # after warm-up
                fwd.append(c1 - c0)
                bwd.append(c3 - c2)
        return statistics.median(fwd), statistics.median(bwd)

    warm = median_pass(0.0)
    extra = {}
    for gap in gaps:
        cold = median_pass(gap)
        extra[gap] = (cold[0] - warm[0], cold[1] - warm[1])
    return extra


def errors(prof: Profile, measured: dict[str, float]) -> list[float]:
    return [stats.pct_error(cost_model.estimate(cfg, prof).epoch_s, measured[cfg.name])
            for cfg in cost_model.IN_SAMPLE if cfg.name in measured]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gaps", type=float, nargs="+", default=[0.001, 0.01, 0.05])
    ap.add_argument("--passes", type=int, default=40)
    ap.add_argument("--quick", action="store_true", help="one gap (50 ms), 5 passes")
    harness.results_option(ap)  # the inputs are read from bench/results all the same
    args = ap.parse_args(argv)
    if args.quick:
        args.gaps, args.passes = [0.05], 5
    base = Profile.from_csv(RESULTS / "cost_model.profile.csv")
    run = json.loads((RESULTS / "cost_model.json").read_text())
    measured = {r["config"]: r["measured_s"] for r in run["rows"]}
    rows: list[dict[str, Any]] = []

    def row(gap: str, prof: Profile, parts: dict[str, float]) -> dict[str, Any]:
        errs = errors(prof, measured)
        return {"gap_ms": gap, "wake_fwd_ms": 1e3 * prof.wake_fwd_s,
                "wake_bwd_ms": 1e3 * prof.wake_bwd_s, **parts,
                "median_abs_err_pct": stats.median(abs(e) for e in errs),
                "max_abs_err_pct": max(abs(e) for e in errs),
                "errors_pct": " ".join(f"{e:+.1f}" for e in errs)}

    rows.append(row("as run", base, {}))
    extra = {b: part_wake(2, b, args.gaps, args.passes) for b in (8, 32)}
    for gap in args.gaps:
        prof = measure_profile(cost_model.MODEL, cost_model.SHAPE, cost_model.CLASSES, "batch",
                               cost_model.PROFILE_SIZES, 3, wake_gap_s=gap)
        parts: dict[str, float] = {}
        for b, by_gap in extra.items():
            f, w = by_gap[gap]
            parts[f"part[0:2) b={b} fwd_ms"] = 1e3 * f
            parts[f"part[0:2) b={b} bwd_ms"] = 1e3 * w
        with_wake = replace(base, wake_fwd_s=prof.wake_fwd_s, wake_bwd_s=prof.wake_bwd_s)
        rows.append(row(f"{1e3 * gap:g}", with_wake, parts))
        console.print(f"[dim]gap {1e3 * gap:g} ms done[/dim]")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    rows = [{k: r.get(k, float("nan")) for k in keys} for r in rows]
    show("wake-up cost vs the gap before a pass (vgg5), and the cost model's error with it", rows)
    meta = run_meta(cost_model_run=run["meta"].get("date"), configs=sorted(measured),
                    argv=sys.argv[1:])
    out = harness.use_results(args.results)
    name = "wake_gap.quick" if args.quick else "wake_gap"
    save(name, rows, meta)
    (out / f"{name}.md").write_text(
        f"Measured {meta['date']} (commit {meta['commit']}, {meta['machine']}), against the "
        f"cost-model run of {meta['cost_model_run']}.\n\n{markdown(rows)}\n")
    console.print(f"wrote {out / name}.*")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
