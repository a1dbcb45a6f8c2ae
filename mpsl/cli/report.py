"""`mpsl report RUN_DIR`: the run's tables, and its measured timeline beside the simulation of
the same plan and topology (timeline.png), the curves, busy time per node and actions.csv."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import RenderableType

from mpsl.cli.common import add_format
from mpsl.cli.output import Output
from mpsl.plan import Plan, PlanError, read_plan_file
from mpsl.spec import Topology
from mpsl.topology import load

if TYPE_CHECKING:
    from planner.profile import Profile

NAME = "report"
HELP = "draw a run's timeline (measured beside simulated), curves and busy time; actions.csv"
PROFILE_FILE = "profile.csv"
SUMMARY_KEYS = ("epochs", "nodes", "links", "summary")  # of results.json, in the output


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("--profile", help="profile CSV to simulate with (else RUN_DIR/profile.csv, "
                                     "else measured on this host and saved there)")
    add_format(p)


def read_results(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "results.json"
    try:
        results: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{run_dir}: no results.json (is it a run folder?)") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from None
    for key in ("source", "summary", "epochs"):
        if key not in results:
            raise ValueError(f"{path}: no '{key}' (written by an older mpsl? run it again)")
    return results


def run_plan(run_dir: Path, results: dict[str, Any]) -> Plan:
    """plan.json of the run folder, else the plan results.json holds."""
    path = run_dir / "plan.json"
    if path.exists():
        return read_plan_file(path)
    if "plan" not in results:
        raise PlanError(f"{run_dir}: neither plan.json nor a plan in results.json")
    return Plan.from_json(results["plan"], f"{run_dir / 'results.json'}: plan")


def run_profile(given: str | None, run_dir: Path, topo: Topology,
                out: Output) -> tuple[Profile, Path]:
    """`--profile`, else RUN_DIR/profile.csv, else this host measured (and saved there)."""
    from planner.profile import Profile

    if given:
        return Profile.from_csv(given), Path(given)
    saved = run_dir / PROFILE_FILE
    if saved.exists():
        return Profile.from_csv(saved), saved
    from planner.resources import host_profile

    out.note(f"profiling {topo.model.name} on this host to simulate the run (saved to {saved}; "
             f"give --profile CSV to skip)...")
    prof = host_profile(topo)
    prof.to_csv(saved)
    return prof, saved


def run(args: argparse.Namespace, out: Output) -> int:
    from mpsl.report import action_dicts, write_report
    from mpsl.trace import read_events
    from planner.cost import simulate

    run_dir = Path(args.run_dir)
    results = read_results(run_dir)
    plan = run_plan(run_dir, results)
    topo = load(results["source"], results.get("overrides") or ())
    profile, profile_path = run_profile(args.profile, run_dir, topo, out)
    measured = read_events(run_dir / "events.jsonl")
    epochs = len(results["epochs"]) or topo.training.epochs
    est = simulate(topo, plan, profile, epochs=epochs, record=True)
    report = write_report(run_dir, results, measured, est.events or [], est.total_s, topo.chain)
    data: dict[str, Any] = {"run_dir": str(run_dir), "profile": str(profile_path),
            "files": [str(p) for p in report.files], "actions": action_dicts(report.actions),
            "busy": {label: bd for label, bd in report.busy}}
    data.update({k: results.get(k) for k in SUMMARY_KEYS})
    out.result(data, render)
    return 0


def render(data: Mapping[str, Any]) -> list[RenderableType]:
    from mpsl.report import actions_table, busy_table, results_tables

    return [*results_tables(data), busy_table(list(data["busy"].items())),
            actions_table(data["actions"]), f"simulated with the profile {data['profile']}",
            *(f"wrote {f}" for f in data["files"])]
