"""`python -m bench`: the papers' reproduction runner.

    .venv/bin/python -m bench                  every experiment, full (hours; see --list)
    .venv/bin/python -m bench NAME [NAME...]   those experiments
    .venv/bin/python -m bench --quick          every experiment's smoke run, 6 at a time
    .venv/bin/python -m bench --list           the registry: name, paper figure, full run time

Each experiment runs as `bench.NAME.main(argv)` with `--results DIR`, in this process, or with
`--jobs J` (a smoke run's default: 6) in forked children, J at a time (`bench.parallel`). Full runs
default to bench/results, smoke runs to bench/results/quick (git-ignored), so a smoke run
never overwrites real results. A module that does not exist yet is skipped with one line; one
that fails is reported and the others still run. At the end the paper table (every
experiment's `paper` rows, from the latest results of each in DIR, whether run now or before)
goes to DIR/paper_table.md, the run's summary to DIR/bench_run.json,
and, after a full run into bench/results, the table into bench/README.md between its markers.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
import traceback
from pathlib import Path
from typing import Any

from bench import harness, paper_table, parallel
from bench.experiments import EXPERIMENTS, Experiment, by_name

README = harness.ROOT / "bench" / "README.md"
QUICK_RESULTS = harness.RESULTS_DEFAULT / "quick"
QUICK_JOBS = 6  # smoke runs mostly wait on emulated links and devices: six at once


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", metavar="NAME", help="experiments to run (default all)")
    ap.add_argument("--quick", action="store_true", help="every experiment's smoke run")
    ap.add_argument("--results", type=Path, default=None, metavar="DIR",
                    help="results folder (default bench/results; --quick: bench/results/quick)")
    ap.add_argument("--list", action="store_true", help="list the experiments and stop")
    ap.add_argument("--jobs", type=int, default=None, metavar="J",
                    help=f"experiments run at once, each in a child process (default 1; "
                         f"--quick: {QUICK_JOBS}); a full run's timings need 1")
    return ap.parse_args(argv)


def list_rows() -> list[dict[str, Any]]:
    return [{"name": e.name, "module": e.module_name, "present": "yes" if e.present else "no",
             "reproduces": e.reproduces, "full run": e.full_time} for e in EXPERIMENTS]


def argv_for(exp: Experiment, quick: bool, results: Path) -> list[str]:
    extra = (["--quick", *exp.quick_args]) if quick else list(exp.full_args)
    return [*extra, "--results", str(results)]


def tables_written(results: Path, exp: Experiment, since: float) -> list[str]:
    """The Markdown tables of `exp` written under `results` since `since` (epoch seconds)."""
    base = exp.table_name
    return sorted(p.name for p in results.glob(f"{base}*.md")
                  if (p.name == f"{base}.md" or p.name.startswith(f"{base}."))
                  and p.stat().st_mtime >= since)


def run_one(exp: Experiment, quick: bool, results: Path) -> dict[str, Any]:
    """Run one experiment in this process; its status, seconds and the tables it wrote."""
    if not exp.present:
        print(f"{exp.name}: skipped, {exp.module_name} is not in this checkout", flush=True)
        return {"name": exp.name, "status": "skipped (no module)", "seconds": 0.0, "tables": []}
    argv = argv_for(exp, quick, results)
    print(f"== {exp.name}: python -m {exp.module_name} {' '.join(argv)}", flush=True)
    since, started = time.time() - 1.0, time.perf_counter()
    status = "ok"
    try:
        code = importlib.import_module(exp.module_name).main(argv)
        if code not in (None, 0):
            status = f"failed (exit {code})"
    except SystemExit as e:  # argparse and explicit exits
        if e.code not in (None, 0):
            status = f"failed (exit {e.code})"
    except Exception as e:  # noqa: BLE001 - one experiment's failure must not stop the others
        traceback.print_exc()
        status = f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    finally:
        harness.use_results(results)  # a module may have pointed it elsewhere
    seconds = time.perf_counter() - started
    tables = tables_written(results, exp, since)
    print(f"== {exp.name}: {status} in {seconds:.1f} s; tables {', '.join(tables) or 'none'}",
          flush=True)
    return {"name": exp.name, "status": status, "seconds": seconds, "tables": tables}


def finish(outcomes: list[dict[str, Any]], quick: bool, results: Path, wall: float) -> None:
    """Write the paper table (from every experiment's latest results in `results`, each row
    with its own command, date and commit) and the run's summary; into the README after a
    full run."""
    rows, machine = paper_table.gather(results, EXPERIMENTS, quick)
    with_rows = {r["experiment"] for r in rows}
    missing = [e.name for e in EXPERIMENTS if e.name not in with_rows]
    table = paper_table.render(rows, machine, missing)
    (results / "paper_table.md").write_text(table)
    summary = harness.run_meta(quick=quick, wall_s=wall, experiments=outcomes)
    (results / "bench_run.json").write_text(json.dumps(summary, indent=2) + "\n")
    full_run = not quick and results.resolve() == harness.RESULTS_DEFAULT.resolve()
    if full_run and paper_table.into_readme(README, table):
        print(f"wrote the paper table into {README}")
    for o in outcomes:
        print(f"{o['name']:>14}: {o['status']}, {o['seconds']:.1f} s")
    print(f"whole run {wall:.1f} s; wrote {results / 'paper_table.md'}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        harness.show("experiments (python -m bench NAME)", list_rows())
        return 0
    try:
        chosen = by_name(args.names) if args.names else list(EXPERIMENTS)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    default = QUICK_RESULTS if args.quick else harness.RESULTS_DEFAULT
    results = harness.use_results((args.results or default).resolve())
    started = time.perf_counter()
    jobs = args.jobs if args.jobs is not None else QUICK_JOBS if args.quick else 1
    if jobs < 1:
        raise SystemExit(f"error: --jobs {jobs}: at least 1")
    if jobs == 1:
        outcomes = [run_one(exp, args.quick, results) for exp in chosen]
    else:
        outcomes = parallel.run_all(chosen, args.quick, results, jobs, run_one)
    finish(outcomes, args.quick, results, time.perf_counter() - started)
    failed = [o["name"] for o in outcomes if o["status"].startswith("failed")]
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
