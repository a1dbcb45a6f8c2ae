"""The registry of experiments that `python -m bench` runs: each one's name, module, the paper
figure or table it reproduces, how long its full run takes here, and the arguments its smoke
run (`--quick`) takes besides `--quick --results DIR`.

A module may not exist yet (several are written in parallel): `present` says so and the runner
skips it with one line.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["EXPERIMENTS", "QUICK_S", "Experiment", "by_name"]


@dataclass(frozen=True)
class Experiment:
    """One experiment: `python -m bench.MODULE` writes `results/TABLE*.{csv,json,md}`."""

    name: str
    reproduces: str  # the paper's figure or table, or what it checks when no paper has one
    full_time: str  # the full run's duration on this 2-core machine
    quick_args: tuple[str, ...] = ()  # added to `--quick --results DIR` in a smoke run
    full_args: tuple[str, ...] = ()
    table: str = ""  # the results' base name (default: the name)
    module: str = ""  # default: bench.NAME
    tags: tuple[str, ...] = field(default=())
    after_all: bool = False  # it reads the others' results: it starts once they have ended

    @property
    def module_name(self) -> str:
        return self.module or f"bench.{self.name}"

    @property
    def table_name(self) -> str:
        return self.table or self.name

    @property
    def present(self) -> bool:
        """Whether its module exists in this checkout."""
        return importlib.util.find_spec(self.module_name) is not None


NO_WAIT = ("--max-wait", "0")  # a smoke run does not wait for a quiet machine
# profiles measured once on this host, read by smoke runs instead of profiling it again
QUICK_PROFILES = Path(__file__).resolve().parent / "quick_profiles"

EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment("paper_epoch", "PiPar Figs. 4 and 6 (epoch and idle time, 3 models, 3 networks)",
               "70 min at a 1-minute load of 6-41", tags=("issue 21, experiment 1",)),
    Experiment("large_models", "PiPar Fig. 5 (SFL vs PiPar on large models; FL infeasible)",
               "42 min at a 1-minute load of 25-40", tags=("issue 21, experiment 2",)),
    Experiment("accuracy", "PiPar Table V and Fig. 8 (accuracy parity on MNIST)",
               "33 min at a 1-minute load of 25-40", tags=("issue 21, experiment 3",)),
    Experiment("batch_size", "PiPar Fig. 10 (batch size sensitivity)",
               "35 min at a 1-minute load of 25-40",
               tags=("issue 21, experiment 4",)),
    Experiment("planner", "PiPar's APS (Sec. 4.4): the chosen plan against the best measured",
               "about 81 min", quick_args=(*NO_WAIT, "--round-wait", "0", "--attempts", "1"),
               tags=("issue 21, experiment 5",)),
    Experiment("planner_full", "planning time against a full-size epoch", "about 24 min",
               quick_args=NO_WAIT),
    Experiment("planner_solve", "MP-SL's ILP solve time (resnet101 in 5 parts)", "about 1 min"),
    Experiment("memory", "MP-SL Fig. 3 (memory per compute node, 1-4 hops, K = 100)",
               "40 min at a 1-minute load of 21-40", tags=("issue 21, experiment 6",)),
    Experiment("hetero", "PiPar's heterogeneous owners (up to 32x over FL, 1.8x over SFL)",
               "about 15 min", quick_args=("--profile", str(QUICK_PROFILES / "hetero_vgg5.csv")),
               tags=("issue 19",)),
    Experiment("hetero_live", "PiPar Fig. 12 (heterogeneous owners, measured)",
               "3-5 min", module="bench.hetero", table="hetero.live",
               full_args=("--live", "--repeats", "3", "--profile",
                          str(QUICK_PROFILES.parent / "results" / "hetero_profile.csv")),
               quick_args=("--live",), tags=("issue 21, experiment 7",)),
    Experiment("cost_model", "MP-SL's cost-model accuracy (3.14-3.86%), its own configurations",
               "about 31 min", quick_args=(*NO_WAIT, "--round-wait", "0")),
    Experiment("peers", "the reference implementations (same vgg5 configuration)",
               "16 min at a 1-minute load of 31-34", tags=("issue 21, experiment 9",)),
    Experiment("epoch_time", "PiPar Fig. 4 (vgg5; version 2 of this project's benchmark)",
               "about 12 min"),
    Experiment("dp", "PiPar Fig. 13 (classic DP's epoch-time overhead)", "about 10 min",
               quick_args=NO_WAIT),
    Experiment("security", "CurveZMQ's epoch-time cost (no paper figure)", "about 3 min"),
    Experiment("transport", "transport throughput against raw ZeroMQ (no paper figure)",
               "about 7 min", full_args=("--repeat", "3")),
    Experiment("chaos", "owner, compute-node and aggregator kills (no paper figure)",
               "about 1 min"),
    Experiment("batched", "batched per-owner copies on a compute node (no paper figure)",
               "about 10 min"),
    Experiment("batchsim", "the cost model with batched per-owner copies (issue 20)",
               "about 1 min", quick_args=("--profile", str(QUICK_PROFILES / "batchsim_vgg5.csv"))),
    Experiment("scale", "planner and simulator at fleet size (issue 20)", "about 8 min"),
    Experiment("scale_live", "a live fleet of pooled owners, K = 8 to 100 (issue 20)",
               "about 15 min"),
    Experiment("netns", "kernel shaping in network namespaces vs in-process (issue 19)",
               "about 7 min", quick_args=NO_WAIT),
    Experiment("replan", "PiPar Fig. 14 (online re-planning's cost and gain, issue 19)",
               "about 10 min", quick_args=NO_WAIT),
    # last: it reads what the others wrote
    Experiment("cost_accuracy", "MP-SL's cost-model accuracy (3.14-3.86%), over every run",
               "under 1 min (reads the others' results)", tags=("issue 21, experiment 8",),
               after_all=True),
)


# Each smoke run's seconds, six at a time on this 2-core host (python -m bench --quick,
# 2026-12-06 17:43, 93 s in all): a smoke run starts the longest first, so that no long one
# starts last and holds the run's end (bench.parallel). Not a claim; an unknown one counts 0.
QUICK_S = {"security": 38.4, "dp": 36.2, "cost_model": 35.1, "hetero_live": 32.0,
           "planner": 31.9, "epoch_time": 27.2, "scale_live": 26.4, "replan": 25.8,
           "chaos": 25.8, "planner_full": 23.9, "batchsim": 22.3, "hetero": 19.8,
           "accuracy": 19.2, "scale": 17.9, "netns": 13.7, "transport": 11.6, "peers": 9.1,
           "batched": 7.6, "batch_size": 7.0, "paper_epoch": 6.5, "large_models": 5.9,
           "planner_solve": 3.0, "memory": 2.1, "cost_accuracy": 0.2}


def by_name(names: list[str]) -> list[Experiment]:
    """The experiments named, in registry order; ValueError naming an unknown one."""
    known = {e.name: e for e in EXPERIMENTS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown experiment {unknown[0]!r}; known: {', '.join(known)}")
    return [e for e in EXPERIMENTS if e.name in names]
