"""The planner's results as data and as tables: ranked plans, one estimate, a profile.

Each `*_data` function makes the JSON object a command prints with `--format json`; each
`*_tables` function renders exactly that object, stacked so that it reads at 80 columns (a
plan's text on a line of its own, two-column tables of `name value` lines).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from mpsl.plan import Plan
    from mpsl.spec import Topology
    from planner.estimate import Estimate
    from planner.profile import Profile
    from planner.report import PlanReport

MIB = 1 << 20  # `memory_mb` counts MiB (planner.resources.BYTES_PER_MB)
_OWNER = re.compile(r"owner\d+")
LINK = "->"


def fold(values: Mapping[str, float]) -> dict[str, tuple[float, int]]:
    """Max and count per name with owners folded (`owner3->server` -> `owner*->server`)."""
    out: dict[str, tuple[float, int]] = {}
    for name, v in values.items():
        g = _OWNER.sub("owner*", name)
        m, n = out.get(g, (v, 0))
        out[g] = (max(m, v), n + 1)
    return out


def folded_lines(values: Mapping[str, float], fmt: str, limit: int = 8) -> str:
    """`name value` lines, owners folded (`owner* (x1000) max`), the largest first."""
    rows = sorted(fold(values).items(), key=lambda kv: -kv[1][0])
    out = [f"{g}{f' (x{n})' if n > 1 else ''} {fmt.format(v)}" for g, (v, n) in rows[:limit]]
    if len(rows) > limit:
        out.append(f"... {len(rows) - limit} more")
    return "\n".join(out) or "-"


def split_plan(text: str) -> tuple[str, str]:
    """`Plan.describe()` as its parts (`owner[0:2) -> server[2:4)`) and the rest (`N=4, 1f1b`),
    so that the parts fit a line of their own."""
    parts, sep, rest = text.partition(", N=")
    return parts, f"N={rest}" if sep else ""


def _grid() -> Table:
    t = Table(show_header=False, box=box.SIMPLE, pad_edge=False, padding=(0, 1))
    t.add_column("what", style="bold", no_wrap=True)
    t.add_column("value")
    return t


def _estimate_rows(t: Table, est: Mapping[str, Any], lines: int) -> None:
    busy = est["busy_s"]
    procs = {r: s for r, s in busy.items() if LINK not in r}
    links = {r: s for r, s in busy.items() if LINK in r}
    b = est["bottleneck"]
    util = busy.get(b, 0.0) / est["epoch_s"] if est["epoch_s"] else 0.0
    t.add_row("epoch", f"{est['epoch_s']:.3f} s (iteration {est['iteration_s']:.4f} s)")
    t.add_row("bottleneck", f"{b} ({util:.0%} busy)")
    t.add_row("busy s, processors", folded_lines(procs, "{:.3f}", lines))
    t.add_row("busy s, links", folded_lines(links, "{:.3f}", lines))
    t.add_row("memory MB", folded_lines({n: v / MIB for n, v in est["memory_bytes"].items()},
                                        "{:.1f}", lines))


# ------------------------------------------------------------------------------ mpsl plan

def plan_report_data(report: PlanReport) -> dict[str, Any]:
    """`mpsl plan --format json`: the ranked candidates (best first), solver and timings."""
    return {**report.to_json(), "plan_s": report.plan_s, "notes": list(report.notes)}


def plan_tables(data: Mapping[str, Any], lines: int = 4) -> list[RenderableType]:
    """Every candidate: `#i plan` on its line, its estimate below; then the notes."""
    out: list[RenderableType] = [Text(
        f"Plans ranked by simulated epoch time (solver {data['solver']}, ILP "
        f"{data['solve_s']:.2f} s, planning {data.get('plan_s', 0.0):.2f} s)", style="bold")]
    if data.get("lower_bound_s") is not None:
        out.append(Text(bound_line(data)))
    for i, c in enumerate(data["candidates"], 1):
        parts, rest = split_plan(c["text"])
        out.append(Text(f"#{i} " + "\n   ".join(parts.split("; ")), style="bold cyan"))
        t = _grid()
        t.add_row("N, schedule", rest or "-")
        t.add_row("from", c.get("source") or "-")
        _estimate_rows(t, c["estimate"], lines)
        out.append(t)
    out += [Text(f"note: {n}") for n in data.get("notes", [])]
    if data.get("out"):
        out.append(Text(f"wrote {data['out']}"))
    return out


def bound_line(data: Mapping[str, Any]) -> str:
    """The lower bound on every plan's epoch, what gives it, and the best plan's gap to it."""
    gap = data.get("gap")
    above = "-" if gap is None else f"{gap:.1%}" if gap >= 0.01 else f"{gap:.2%}"
    return (f"Lower bound {data['lower_bound_s']:.3f} s per epoch over every plan "
            f"({data['bound_from']}); #1 is at most {above} above the optimum")


# -------------------------------------------------------------------------- mpsl simulate

def estimate_data(topo: Topology, plan: Plan, est: Estimate, wall_s: float) -> dict[str, Any]:
    """`mpsl simulate --format json`: the plan simulated and the estimate."""
    return {"topology": topo.name, "source": topo.source, "mode": topo.mode,
            "owners": len(topo.owners), "plan": plan.to_json(), "text": plan.describe(),
            "epochs": est.epochs, "total_s": est.total_s, "estimate": est.to_json(),
            "simulated_in_s": wall_s, "steady_periods": est.steady_periods}


def estimate_tables(data: Mapping[str, Any]) -> list[RenderableType]:
    parts, rest = split_plan(data["text"])
    t = _grid()
    t.add_row("N, schedule", rest or "-")
    _estimate_rows(t, data["estimate"], 8)
    t.add_row("all epochs", f"{data['total_s']:.3f} s ({data['epochs']} epoch(s))")
    periods = data.get("steady_periods", 0)
    how = (f"steady state: {periods} period(s) skipped" if periods else "every event")
    t.add_row("simulated in", f"{data['simulated_in_s']:.2f} s ({how})")
    return [Text(f"{data['topology']}: {data['owners']} owner(s), mode {data['mode']}",
                 style="bold"),
            Text(f"plan {parts}", style="bold cyan"), t]


# --------------------------------------------------------------------------- mpsl profile

LAYER_FIELDS = ("fwd_a", "fwd_c", "bwd_a", "bwd_c", "opt_s", "out_bytes", "param_bytes",
                "act_bytes")
PROFILE_FIELDS = ("wake_fwd_s", "wake_bwd_s", "step_s", "wake_step_s")


def profile_data(model: str, prof: Profile, out: str | None) -> dict[str, Any]:
    """`mpsl profile --format json`: every layer's fitted line and bytes, the per-action
    values, and the CSV written (or None)."""
    layers = [{"layer": i, "name": lp.name, **{f: getattr(lp, f) for f in LAYER_FIELDS}}
              for i, lp in enumerate(prof.layers)]
    return {"model": model, "layers": layers,
            **{f: getattr(prof, f) for f in PROFILE_FIELDS}, "out": out}


def profile_tables(data: Mapping[str, Any]) -> list[RenderableType]:
    """Times and bytes as two tables (each fits 80 columns), then the per-action line."""
    times = Table(title=f"profile of {data['model']}: t(b) = a + c*b seconds (least "
                        f"squares; the planner interpolates between measured sizes)",
                  box=box.SIMPLE_HEAD)
    sizes = Table(title=f"bytes of {data['model']}", box=box.SIMPLE_HEAD)
    for col in ("layer", "name", "fwd a", "fwd c", "bwd a", "bwd c", "opt s"):
        times.add_column(col, justify="left" if col == "name" else "right", no_wrap=True)
    for col in ("layer", "name", "out B/sample", "params B", "act B/sample"):
        sizes.add_column(col, justify="left" if col == "name" else "right", no_wrap=True)
    for r in data["layers"]:
        times.add_row(str(r["layer"]), r["name"],
                      *(f"{r[f]:.2e}" for f in ("fwd_a", "fwd_c", "bwd_a", "bwd_c", "opt_s")))
        sizes.add_row(str(r["layer"]), r["name"], f"{r['out_bytes']:,}",
                      f"{r['param_bytes']:,}", f"{r['act_bytes']:,}")
    line = Text(f"per action: wake-up {1e3 * data['wake_fwd_s']:.3f} ms forward, "
                f"{1e3 * data['wake_bwd_s']:.3f} ms backward; STEP {1e3 * data['step_s']:.3f}"
                f" ms per part beyond opt, {1e3 * data['wake_step_s']:.3f} ms more after a "
                f"sleep")
    out: list[RenderableType] = [times, sizes, line]
    if data.get("out"):
        out.append(Text(f"wrote {data['out']}"))
    return out
