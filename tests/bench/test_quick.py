"""`python -m bench` (issue 21): the registry, the paper table, and the smoke run of every
experiment (`--quick`), which must write each present experiment's table within 2 minutes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import paper_table, parallel
from bench.experiments import EXPERIMENTS, Experiment, by_name

ROOT = Path(__file__).resolve().parents[2]
QUICK_LIMIT_S = 120.0  # the bound on the whole smoke run
# The smoke run of all 24 experiments, six at a time (bench.parallel); four at a time it took
# 79-116 s in a fresh clone (load 0-3.5), 94 s with 22 experiments at a load of 1.4
# (2026-12-06 14:46; one at a time it took 117-122 s at a load of 0-1). In a fresh clone's
# suite at 17:34 it took 111.6 s (92.7 s alone); started longest first (QUICK_S), 79.5 s alone.


def test_registry_names_are_unique_and_looked_up_in_order() -> None:
    names = [e.name for e in EXPERIMENTS]
    assert len(names) == len(set(names))
    assert [e.name for e in by_name(["accuracy", "large_models"])] == ["large_models", "accuracy"]
    with pytest.raises(ValueError, match="unknown experiment 'nope'"):
        by_name(["nope"])
    assert Experiment("x", "", "").module_name == "bench.x"
    assert not Experiment("surely_absent_module", "", "").present


def _results(folder: Path, name: str, paper: list[dict[str, str]]) -> None:
    meta = {"date": "2026-12-06T12:00:00+00:00", "commit": "abc1234", "machine": "CPU, 2 cores"}
    (folder / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": [], "paper": paper}))


def test_paper_table_gathers_rows_and_fills_the_readme(tmp_path: Path) -> None:
    row = {"figure": "Fig. 5", "metric": "speedup", "paper": "1.1-2.2x", "ours": "1.5x",
           "verdict": "met", "reason": ""}
    _results(tmp_path, "large_models", [row])
    _results(tmp_path, "accuracy.quick", [row])  # a smoke run's: left out of a full table
    rows, machine = paper_table.gather(tmp_path, by_name(["large_models", "accuracy"]))
    assert machine == "CPU, 2 cores"
    assert rows == [{"experiment": "large_models", **row,
                     "command": "`python -m bench large_models`",
                     "date, commit": "2026-12-06T12:00, abc1234"}]
    table = paper_table.render(rows, machine, ["accuracy"])
    assert "| large_models | Fig. 5 | speedup | 1.1-2.2x | 1.5x | met |" in table
    assert "Without paper rows (this project's own benchmarks, or not run yet): accuracy." \
        in table
    readme = tmp_path / "README.md"
    readme.write_text(f"# B\n\nintro\n\n{paper_table.BEGIN}\nold\n{paper_table.END}\nrest\n")
    assert paper_table.into_readme(readme, table)
    assert readme.read_text() == f"# B\n\nintro\n\n{paper_table.BEGIN}\n{table}" \
                                 f"{paper_table.END}\nrest\n"
    (tmp_path / "plain.md").write_text("no markers\n")
    assert not paper_table.into_readme(tmp_path / "plain.md", table)


def test_paper_rows_are_checked(tmp_path: Path) -> None:
    bad = {"figure": "f", "metric": "m", "paper": "p", "ours": "o", "verdict": "maybe",
           "reason": ""}
    _results(tmp_path, "accuracy", [bad])
    with pytest.raises(ValueError, match=r"accuracy.json: paper\[0\].verdict 'maybe'"):
        paper_table.gather(tmp_path, by_name(["accuracy"]))
    _results(tmp_path, "accuracy", [{"figure": "f"}])
    with pytest.raises(ValueError, match=r"paper\[0\] has no 'metric'"):
        paper_table.gather(tmp_path, by_name(["accuracy"]))


def _run_quick(folder: Path) -> tuple[int, str, float]:
    """`python -m bench --quick --results folder` in its own session, killed (with every
    process it started) past twice the limit."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "bench", "--quick", "--results", str(folder)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=2 * QUICK_LIMIT_S)
    except subprocess.TimeoutExpired:
        out = ""
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            out = (out or "") + (proc.communicate()[0] or "") + "\n(killed past the limit)"
    return proc.returncode, out, time.monotonic() - started


@pytest.mark.timeout(2 * QUICK_LIMIT_S + 60)
def test_quick_run_writes_every_present_table_within_two_minutes(tmp_path: Path) -> None:
    code, out, seconds = _run_quick(tmp_path)
    tail = "\n".join(out.splitlines()[-40:])
    print(f"python -m bench --quick: {seconds:.1f} s")  # shown with -s; in bench_run.json too
    assert code == 0, tail
    present = [e for e in EXPERIMENTS if e.present]
    missing = [e.name for e in present if not list(tmp_path.glob(f"{e.table_name}*.md"))]
    assert not missing, f"no table from {missing}:\n{tail}"
    assert (tmp_path / "paper_table.md").is_file()
    summary = json.loads((tmp_path / "bench_run.json").read_text())
    assert {x["name"] for x in summary["experiments"]} == {e.name for e in EXPERIMENTS}
    assert seconds < QUICK_LIMIT_S, f"the smoke run took {seconds:.0f} s:\n{tail}"


def _fake_run_one(exp: Experiment, quick: bool, results: Path) -> dict[str, object]:
    """run_one's stand-in: writes a table, fails, or dies, by the experiment's name."""
    print(f"{exp.name} says hello")
    if exp.name == "dies":
        os.kill(os.getpid(), signal.SIGKILL)
    if exp.name == "fails":
        raise RuntimeError("broken on purpose")
    if exp.name == "one":
        time.sleep(0.5)  # still running when a slot frees for the others
    seen = sorted(p.stem for p in results.glob("*.md"))
    (results / f"{exp.name}.md").write_text(" ".join(seen))
    (results / f"{exp.name}.ports").write_text(os.environ.get("MPSL_PORT_RANGE", ""))
    return {"name": exp.name, "status": "ok", "seconds": 0.0, "tables": [f"{exp.name}.md"]}


def test_parallel_runs_every_experiment_in_a_child_and_reports_each_end(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chosen = [Experiment(name, "", "") for name in ("one", "dies", "fails", "two", "three")]
    chosen.append(Experiment("last", "", "", after_all=True))
    outcomes = parallel.run_all(chosen, True, tmp_path, 2, _fake_run_one)
    assert [o["name"] for o in outcomes] == ["one", "dies", "fails", "two", "three", "last"]
    by = {o["name"]: o for o in outcomes}
    assert by["one"]["status"] == by["two"]["status"] == by["three"]["status"] == "ok"
    assert by["dies"]["status"] == "failed: the child ended (signal 9)"
    assert by["fails"]["status"] == "failed: the child ended (exit 1)"
    assert {p.name for p in tmp_path.glob("*.md")} == {"one.md", "two.md", "three.md",
                                                       "last.md"}
    assert (tmp_path / "last.md").read_text() == "one three two"  # after every other one
    shares = [(tmp_path / f"{n}.ports").read_text() for n in ("one", "two", "three", "last")]
    assert all(shares) and len(set(shares)) == 4  # each its own ports (nodes.ports)
    assert (tmp_path / "logs" / "two.log").read_text() == "two says hello\n"
    out = capsys.readouterr().out
    assert "fails| RuntimeError: broken on purpose" in out  # a failure's log tail is shown
    assert re.search(r"== three: ok in \d+\.\d s \(\d+\.\d CPU s\); tables three\.md", out)


def test_a_smoke_run_starts_the_longest_first(tmp_path: Path) -> None:
    """By QUICK_S in a smoke run (no long one starts last); a full run keeps the order given.
    One at a time, each fake experiment's table lists those written before it."""
    chosen = [Experiment(name, "", "") for name in ("memory", "security", "peers")]
    parallel.run_all(chosen, True, tmp_path / "quick", 1, _fake_run_one)
    assert (tmp_path / "quick" / "memory.md").read_text() == "peers security"
    assert (tmp_path / "quick" / "peers.md").read_text() == "security"
    parallel.run_all(chosen, False, tmp_path / "full", 1, _fake_run_one)
    assert (tmp_path / "full" / "peers.md").read_text() == "memory security"
