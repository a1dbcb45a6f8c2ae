"""The paper-table rows of the experiments whose modules came before the paper table: PiPar's
Tables VII (planner), Fig. 12 (heterogeneous owners, measured: hetero.live), Fig. 13 (dp) and
Fig. 14 (replan), each derived from the rows its benchmark writes.

The modules pass these rows to `harness.publish`; `python -m bench.paper_rows` adds them to
results written before (each JSON's `paper`, from that JSON's own rows: nothing is re-run or
re-measured), so that the paper table shows them with the command, date and commit of the run
that measured them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import harness

Rows = list[dict[str, Any]]
SLOW_SERVER = ("the server is one thread of this host, only 5-10x an emulated owner and shared "
               "by K = 8 of them; the paper's server was far faster than its Raspberry Pis")


def _row(figure: str, metric: str, paper: str, ours: str, verdict: str,
         reason: str = "") -> dict[str, str]:
    return {"figure": figure, "metric": metric, "paper": paper, "ours": ours,
            "verdict": verdict, "reason": reason}


def dp(rows: Rows) -> Rows:
    """Fig. 13: classic DP's epoch-time overhead (s, sigma = 1) on PiPar and on FL."""
    by = {r["mode"]: r for r in rows}
    out = []
    if "PiPar" in by:
        s = by["PiPar"]["overhead_s"]
        out.append(_row("PiPar Fig. 13", "classic DP's epoch-time overhead on PiPar, sigma = 1",
                        "<= 0.16 s", f"{s:+.2f} s", "met" if s <= 0.16 else "not met",
                        "median of paired repeats; below the runs' spread"))
    if "FL" in by:
        out.append(_row("PiPar Fig. 13", "classic DP's epoch-time overhead on FL, sigma = 1",
                        "up to 11.7 s", f"{by['FL']['overhead_s']:+.2f} s", "not comparable",
                        "the paper clips and noises whole models on Raspberry Pis; here vgg5 "
                        "on this host (dp.direct: the work itself in one process)"))
    return out


def replan(rows: Rows) -> Rows:
    """Fig. 14: re-planning's overhead as a share of training, by change interval."""
    out = []
    for r in rows:
        if r.get("interval_min", 0) < 1:  # the live cycle's check, not a point of the figure
            continue
        minutes, share = r["interval_min"], r["share_pct"]
        bound = 8.3 if minutes == 1 else 1.0
        out.append(_row("PiPar Fig. 14", f"re-planning overhead, a change every {minutes} min",
                        "up to 8.3%" if minutes == 1 else "under 1%", f"{share:.2f}%",
                        "met" if share <= bound else "not met",
                        f"{r['overhead_s']:.2f} s per re-plan (planner and switch), measured"))
    return out


def hetero_live(rows: Rows) -> Rows:
    """Fig. 12: PiPar over FL and SFL with half the owners 2x slower, measured; and what
    per-owner plans (which PiPar does not have) add."""
    by = {r["plan"]: r for r in rows}
    one = by.get("PiPar one plan")
    if one is None:
        return []
    out = []
    for base, paper, top in (("FL", "up to 32x", 32.0), ("SFL", "up to 1.8x", 1.8)):
        if base in by:
            x = by[base]["measured_s"] / one["measured_s"]
            out.append(_row("PiPar Fig. 12", f"PiPar over {base}, half the owners 2x slower, "
                            f"measured (K = 8, 4G)", paper, f"{x:.2f}x",
                            "met" if x >= top else "not met", SLOW_SERVER))
    if "PiPar per-owner" in by:
        x = one["measured_s"] / by["PiPar per-owner"]["measured_s"]
        out.append(_row("PiPar Fig. 12 (setting)", "per-owner plans over PiPar's one plan, "
                        "measured (K = 8, 4G)", "no per-owner plans", f"{x:.2f}x",
                        "not comparable", "PiPar plans one cut and N for every owner"))
    return out


def planner(rows: Rows) -> Rows:
    """Table VII: the planner's plan against the measured optimum (score T_opt / T_plan)."""
    scores = [r["score"] for r in rows if "score" in r]
    if not scores:
        return []
    best = sum(1 for s in scores if s >= 1.0 - 1e-9)
    low = min(scores)
    return [
        _row("PiPar Table VII", "score T_opt / T_plan, the least over cases", "> 0.96",
             f"{low:.3f}", "met" if low > 0.96 else "not met",
             f"{len(scores)} cases (3 models x 2 networks), measured optima"),
        _row("PiPar Table VII", "cases whose planned plan is the measured optimum", "83.3%",
             f"{100 * best / len(scores):.1f}% ({best} of {len(scores)})",
             "met" if best / len(scores) >= 0.833 else "not met",
             "ties within the runs' spread count as misses")]


DERIVE: dict[str, Callable[[Rows], Rows]] = {
    "dp": dp, "replan": replan, "hetero.live": hetero_live, "planner": planner}


def add_to(folder: Path) -> list[str]:
    """Add the derived paper rows to each results JSON of DERIVE under `folder`; the names
    of the files changed."""
    changed = []
    for name, derive in DERIVE.items():
        path = folder / f"{name}.json"
        if not path.is_file():
            continue
        doc = json.loads(path.read_text())
        paper = derive(doc.get("rows", []))
        if paper and doc.get("paper") != paper:
            doc["paper"] = paper
            path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
            changed.append(path.name)
    return changed


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.results_option(ap)
    args = ap.parse_args(argv)
    changed = add_to(harness.use_results(args.results))
    print("paper rows added to: " + (", ".join(changed) or "nothing (already there)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
