"""The paper table: every experiment's `paper` rows (figure, metric, the paper's number, ours,
verdict, reason) gathered from its results JSON into results/paper_table.md, and in full runs
into bench/README.md between the markers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.experiments import Experiment
from bench.harness import markdown

__all__ = ["BEGIN", "END", "VERDICTS", "gather", "into_readme", "render"]

BEGIN, END = "<!-- paper-table:begin -->", "<!-- paper-table:end -->"
VERDICTS = ("met", "not met", "not comparable")
FIELDS = ("figure", "metric", "paper", "ours", "verdict", "reason")


def result_json(folder: Path, exp: Experiment, quick: bool = False) -> Path | None:
    """results/TABLE.json, if any; with `quick`, the newer of it and TABLE.quick.json."""
    names = [f"{exp.table_name}.json"] + ([f"{exp.table_name}.quick.json"] if quick else [])
    found = [p for p in (folder / n for n in names) if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def rows_of(path: Path, exp: Experiment) -> list[dict[str, Any]]:
    """The `paper` rows of one results JSON, each with its experiment, command and date;
    ValueError naming the file and field of a malformed row."""
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict):  # a table without meta (planner_solve's rows)
        return []
    meta = doc.get("meta", {})
    quick = path.name.endswith(".quick.json") or bool(meta.get("quick"))
    command = f"python -m bench {exp.name}" + (" --quick" if quick else "")
    out = []
    for i, row in enumerate(doc.get("paper") or []):
        missing = [f for f in FIELDS if f not in row]
        if missing:
            raise ValueError(f"{path}: paper[{i}] has no {missing[0]!r}")
        if row["verdict"] not in VERDICTS:
            raise ValueError(f"{path}: paper[{i}].verdict {row['verdict']!r} is not one of "
                             f"{', '.join(VERDICTS)}")
        out.append({"experiment": exp.name, **{f: row[f] for f in FIELDS},
                    "command": f"`{command}`",
                    "date, commit": f"{meta.get('date', '?')[:16]}, {meta.get('commit', '?')}"})
    return out


def gather(folder: Path, experiments: Sequence[Experiment],
           quick: bool = False) -> tuple[list[dict[str, Any]], str]:
    """Every experiment's paper rows found under `folder` (smoke runs' only with `quick`),
    and the machine they ran on."""
    rows: list[dict[str, Any]] = []
    machines: set[str] = set()
    for exp in experiments:
        path = result_json(folder, exp, quick)
        if path is None:
            continue
        found = rows_of(path, exp)
        rows += found
        if found:
            machines.add(json.loads(path.read_text())["meta"].get("machine", "?"))
    return rows, "; ".join(sorted(machines)) or "?"


def render(rows: list[dict[str, Any]], machine: str, missing: Sequence[str]) -> str:
    """The table in Markdown, with the machine and the experiments that have no rows yet."""
    lines = ["Each paper figure or table against ours (`python -m bench` writes this table; "
             f"machine: {machine}):", ""]
    lines.append(markdown(rows, 2) if rows else "(no experiment has written paper rows yet)")
    if missing:
        lines += ["", "Without paper rows (this project's own benchmarks, or not run yet): "
                  + ", ".join(missing) + "."]
    return "\n".join(lines) + "\n"


def into_readme(readme: Path, table: str) -> bool:
    """Replace what lies between the markers of `readme` with `table`; False (nothing
    written) when the file lacks them."""
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        return False
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    readme.write_text(f"{head}{BEGIN}\n{table}{END}{tail}")
    return True
