"""Heterogeneous owners (issue 19): PiPar with per-owner plans against PiPar with one plan,
FL and SFL, on the cost model.

What runs (version 2): vgg5 (BatchNorm) on synthetic 32x32x3
data, K = 8 owners with 256 samples each, B = 32 (8 iterations per owner and epoch), one
server at this host's speed; half of the owners (the odd ones) 2x slower than the others
(`compute_scale` 10 against 5, PiPar's heterogeneous setting: devices far slower than the
server), every owner on the same link (4G, 4G+ and WiFi of bench/harness.py: three cases). Version 2
adds a second scenario, `compute+link`: the same, and the fast owners' uplink 10x slower
(added after version 1 found per-owner plans equal to one plan in PiPar's setting: there the
slow owners already keep one layer, the least possible). This host is profiled once
(`planner.resources.host_profile`, as `plan: auto` does).

Per case, four plans, each simulated over one whole epoch (`planner.cost.simulate`, every
event; the estimate is deterministic, so there is no spread to quote):
- FL: every owner trains the whole model (mode fl);
- SFL: `choose_plan` in mode sfl (N = 1, the ILP's cuts);
- PiPar, one plan: `choose_plan` (one cut tuple for all owners, N by APS);
- PiPar, per-owner: `choose_plan` with `plan.per_owner` (the joint choice of
  `planner.owner_cuts` ranked beside the one-plan candidates: the best of them all), and the
  joint candidate itself (`owner-ilp`).
Reported: each epoch (s), the speedups of per-owner PiPar over FL, SFL and one-plan PiPar
(ratios of epochs of the same run), and the per-owner plan. Targets from the paper: up to
32x over FL and 1.8x over SFL (PiPar with one plan; measured there, estimated here); what
per-owner plans add over one plan is the question.

The profile measured is written to RESULTS/hetero_profile.csv; `--profile CSV` plans on a
given one instead (the same numbers again: on this shared host a profile measured under
another load moves every epoch, and the ratios with it).

`--live`: the same four plans run for real (K = 8, the `compute` scenario under 4G), the
measured epoch beside the estimate, in RESULTS/hetero.live.* (bench.hetero_live: its
definitions); the estimate-only tables here are not touched by it.

    .venv/bin/python -m bench.hetero [--quick] [--profile CSV] [--results DIR]
    .venv/bin/python -m bench.hetero --live [--repeats 3] [--scale S] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from bench.harness import (
    NETWORKS,
    markdown,
    parse_doc,
    publish,
    results_dir,
    results_option,
    run_meta,
    synthetic,
    use_results,
)
from bench.harness import topology as make_doc
from mpsl.plan import make_plan
from mpsl.training import num_layers
from planner import Profile, choose_plan, simulate
from planner.resources import host_profile

K, BATCH, SAMPLES, FAST, SLOW = 8, 32, 256, 5.0, 10.0


SCENARIOS = ("compute", "compute+link")


def doc(owners: int, network: str, mode: str, per_owner: bool = False,
        scenario: str = "compute", samples: int = SAMPLES, fast: float = FAST,
        live: bool = False) -> dict[str, Any]:
    """The case's topology: half of the owners 2x slower (and the others' uplink 10x slower
    in `compute+link`); `live`: on free loopback ports, for a run."""
    up, down = NETWORKS[network]
    d = make_doc(owners=owners, compute=1, mode=mode, model="vgg5",
                 dataset=synthetic(samples * owners), training={"batch_size": BATCH,
                                                               "epochs": 1},
                 up=up, down=down, compute_scale=fast, norm="batch",
                 ports=None if live else list(range(5700, 5702 + owners)))
    d["data_owners"]["overrides"] = [{"index": k, "compute_scale": 2 * fast}
                                     for k in range(1, owners, 2)]
    if scenario == "compute+link":
        d["data_owners"]["overrides"] += [{"index": k, "uplink_mbps": up / 10}
                                          for k in range(0, owners, 2)]
    d["plan"] = {"auto": True, "micro_batches": 1, "per_owner": per_owner}
    return d


def case(owners: int, network: str, prof: Profile, scenario: str) -> dict[str, Any]:
    """The four plans of one case, simulated."""
    row: dict[str, Any] = {"scenario": scenario, "network": network, "owners": owners}

    def parse(mode: str, per_owner: bool = False) -> Any:
        return parse_doc(doc(owners, network, mode, per_owner, scenario))

    fl = parse("fl")
    row["fl_s"] = simulate(fl, make_plan(fl, num_layers(fl)), prof, steady=False).epoch_s
    sfl = choose_plan(parse("sfl"), prof, steady=False, bound=False)
    row["sfl_s"] = sfl.best.estimate.epoch_s
    one = choose_plan(parse("pipar"), prof, steady=False, bound=False)
    row["pipar_one_s"] = one.best.estimate.epoch_s
    started = time.perf_counter()
    het = choose_plan(parse("pipar", True), prof, steady=False)
    row["plan_s"] = time.perf_counter() - started
    joint = [c for c in het.candidates if c.source == "owner-ilp"]
    row["pipar_owner_s"] = het.best.estimate.epoch_s
    row["owner_ilp_s"] = joint[0].estimate.epoch_s if joint else None
    row["best_source"] = het.best.source
    row["lower_bound_s"] = het.bound.seconds if het.bound is not None else None
    for base in ("fl", "sfl", "pipar_one"):
        row[f"x_{base}"] = row[f"{base}_s"] / row["pipar_owner_s"]
    row["one_plan"] = one.best.plan.describe()
    row["per_owner_plan"] = (joint[0] if joint else het.best).plan.describe()
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.hetero", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one case, 4 owners (a smoke run)")
    ap.add_argument("--profile", help="plan on this profile CSV instead of measuring one")
    ap.add_argument("--live", action="store_true",
                    help="the live runs instead of the estimates (bench.hetero_live)")
    ap.add_argument("--repeats", type=int, default=3, help="--live: rounds of the four runs")
    ap.add_argument("--scale", type=float, default=None,
                    help=f"--live: the fast owners' compute_scale (default {FAST})")
    results_option(ap)
    args = ap.parse_args(argv)
    use_results(args.results)
    if args.live:
        from bench.hetero_live import live

        return live(args)
    started = time.perf_counter()
    owners, networks = (4, ["4G"]) if args.quick else (K, list(NETWORKS))
    if args.profile:
        prof = Profile.from_csv(args.profile)
    else:
        prof = host_profile(parse_doc(doc(owners, networks[0], "pipar")))
        prof.to_csv(results_dir() / "hetero_profile.csv")
    scenarios = SCENARIOS[:1] if args.quick else SCENARIOS
    rows = [case(owners, n, prof, sc) for sc in scenarios for n in networks]
    meta = run_meta(wall_s=time.perf_counter() - started, owners=owners, batch=BATCH,
                    samples=SAMPLES, compute_scale=[FAST, SLOW], quick=args.quick)
    command = ".venv/bin/python -m bench.hetero" + (" --quick" if args.quick else "") + (
        f" --profile {args.profile}" if args.profile else "")
    publish("hetero", command, meta, [("", "Heterogeneous owners (estimates, s per epoch)",
                                       rows, 3)])
    with open(results_dir() / "hetero.md", "a") as fh:
        fh.write(for_readme(rows))
    return 0


def for_readme(rows: list[dict[str, Any]]) -> str:
    """The .md's closing section: the speedups per case and the verdict, from `rows`."""
    table = [{"scenario": r["scenario"], "network": r["network"],
              "per-owner vs FL": r["x_fl"], "vs SFL": r["x_sfl"],
              "vs PiPar one plan": r["x_pipar_one"], "best": r["best_source"]} for r in rows]
    gain = [r["x_pipar_one"] for r in rows]
    x_fl = [r["fl_s"] / r["pipar_one_s"] for r in rows]
    x_sfl = [r["sfl_s"] / r["pipar_one_s"] for r in rows]
    verdict = (
        f"Estimates (cost model, this host's profile), not measurements. PiPar with one plan "
        f"against FL: {min(x_fl):.2f}x to {max(x_fl):.2f}x (paper: up to 32x, measured on far "
        f"slower devices); against SFL: {min(x_sfl):.2f}x to {max(x_sfl):.2f}x (paper: up to "
        f"1.8x). Per-owner plans over one plan: median {statistics.median(gain):.3f}x, "
        f"{min(gain):.3f}x to {max(gain):.3f}x over the {len(rows)} cases.")
    if max(gain) > 1.001:
        verdict += " Where they gain, the owners do not all keep the same layers."
    return f"\n## For bench/README\n\n{markdown(table, 3)}\n{verdict}\n"


if __name__ == "__main__":
    raise SystemExit(main())
