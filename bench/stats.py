"""The benchmarks' statistics: small pure functions, pinned by tests/bench/test_stats.py.

Errors are `100 * (estimate / measured - 1)` (negative: the estimate is short). A run's epoch
time leaves out its first epoch (the warm-up). Scores are T_opt / T_plan, never clipped.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from mpsl.actions import Action
from mpsl.metrics import ActionRow
from mpsl.names import AGGREGATOR, OWNER, owner_index
from mpsl.trace import Event, is_round_event

K = TypeVar("K", bound=Hashable)
COMPUTE = "compute"  # the class of every compute node in the per-action tables
SCORE_MIN, SCORE_ONE_SHARE = 0.99, 0.9  # the planner's targets


# ---------------------------------------------------------------- errors and epoch times


def pct_error(estimate: float, measured: float) -> float:
    """How far `estimate` lies from `measured`, in percent of `measured`."""
    return 100.0 * (estimate / measured - 1.0)


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def spread_pct(values: Sequence[float]) -> float:
    """(max - min) / median, in percent; 0 for fewer than two values."""
    if len(values) < 2:
        return 0.0
    return 100.0 * (max(values) - min(values)) / median(values)


def paired_errors(estimates: Sequence[float], measured: Sequence[float]) -> list[float]:
    """Each run's estimate against that run's measured time."""
    return [pct_error(e, m) for e, m in zip(estimates, measured, strict=True)]


def mean_after_warmup(walls: Sequence[float], warmup: int = 1) -> float:
    """The mean of the epoch times after the first `warmup` epochs."""
    return statistics.fmean(walls[warmup:])


def median_after_warmup(walls: Sequence[float], warmup: int = 1) -> float:
    """The median of the epoch times after the first `warmup` epochs."""
    return median(walls[warmup:])


def target_row(metric: str, value: float, target: str, met: bool | str) -> dict[str, Any]:
    """One row of a benchmark's summary table."""
    return {"metric": metric, "value": value, "target": target, "met": met}


def error_targets(errors: Sequence[float], label: str, median_max: float = 2.0,
                  max_max: float = 5.0) -> list[dict[str, Any]]:
    """The cost model's two epoch-time rows: median and max |error| against their targets."""
    abs_errs = [abs(e) for e in errors]
    mid, top = median(abs_errs), max(abs_errs)
    return [target_row(f"epoch time, median |error| %, {label}", mid, f"<= {median_max:g}",
                       mid <= median_max),
            target_row(f"epoch time, max |error| %, {label}", top, f"<= {max_max:g}",
                       top <= max_max)]


# ---------------------------------------------------------------- planner scores


def rank(times: Mapping[K, float], key: K) -> int:
    """1 + the number of entries strictly faster than `key`'s."""
    return 1 + sum(1 for t in times.values() if t < times[key])


def held_out_score(runs: Mapping[K, Sequence[float]], planned: K,
                   split: int | None = None) -> tuple[K, float]:
    """Select on the first `split` runs (default half), score on the rest.

    The plan with the smallest median over the first runs is selected (ties: first in
    `runs`); the score is its median over the remaining runs over the planned plan's,
    unclipped: above 1 when the planned plan measures faster than the selected one.
    """
    half = len(runs[planned]) // 2 if split is None else split
    first = {k: median(ts[:half]) for k, ts in runs.items()}
    picked = min(first, key=lambda k: first[k])
    return picked, median(runs[picked][half:]) / median(runs[planned][half:])


def paired_held_out_score(runs: Mapping[K, Sequence[float]], planned: K,
                          split: int | None = None) -> tuple[K, float]:
    """`held_out_score` with every run compared with the runs of its own round.

    Run r of every plan belongs to round r. Selection: the smallest median over the first
    rounds of a plan's time over the geometric mean of all plans' times in that round;
    score: the median over the remaining rounds of T_selected / T_planned in the same round.
    """
    rounds = len(runs[planned])
    half = rounds // 2 if split is None else split
    level = [math.exp(statistics.fmean(math.log(ts[r]) for ts in runs.values()))
             for r in range(rounds)]
    first = {k: median(ts[r] / level[r] for r in range(half)) for k, ts in runs.items()}
    picked = min(first, key=lambda k: first[k])
    return picked, median(runs[picked][r] / runs[planned][r] for r in range(half, rounds))


def score_targets(scores: Sequence[float], label: str, min_score: float = SCORE_MIN,
                  share: float = SCORE_ONE_SHARE) -> list[dict[str, Any]]:
    """The planner's two rows: the smallest score, and the share of cases with score >= 1
    (the planned plan as fast as the selected optimum)."""
    ones = sum(1 for s in scores if s >= 1.0)
    pct = 100.0 * ones / len(scores)
    return [target_row(f"min score, {label}", min(scores), f">= {min_score:g}",
                       min(scores) >= min_score),
            target_row(f"cases with score >= 1 (%), {label}", pct, f">= {100 * share:g}",
                       ones >= share * len(scores))]


def seeded_sample(items: Sequence[K], k: int | None, seed: int) -> list[K]:
    """`k` of `items` drawn without replacement by `random.Random(seed)`, in their order;
    all of them when `k` is None or not smaller."""
    if k is None or k >= len(items):
        return list(items)
    chosen = set(random.Random(seed).sample(range(len(items)), k))
    return [x for i, x in enumerate(items) if i in chosen]


def expected_duration(epoch_s: Iterable[float], epochs: int, overhead_s: float,
                      ratio: float = 1.0) -> float:
    """Seconds to run one run per simulated epoch time: each run's start and end plus
    `epochs` epochs of the simulated time times `ratio` (measured over simulated)."""
    return sum(overhead_s + epochs * ratio * t for t in epoch_s)


# ---------------------------------------------------------------- traces


def steady_events(events: Iterable[Event], iterations: Sequence[int], rounds: int,
                  warmup: int = 1) -> list[Event]:
    """The events after the first `warmup` epochs: by iteration, or by round for AVG,
    PARAMS, GLOBAL and CONTROL. `iterations[k]` is owner k's per epoch, `rounds` the
    aggregation rounds per epoch; events without an owner or iteration are kept."""
    out = []
    for e in events:
        if e.iter is None:
            out.append(e)
        elif is_round_event(e.action):
            if e.iter >= warmup * rounds:
                out.append(e)
        elif e.owner is None or e.iter >= warmup * iterations[e.owner]:
            out.append(e)
    return out


def epoch_windows(walls: Sequence[float], start: float = 0.0) -> list[tuple[float, float]]:
    """(start, end) of every epoch on the trace's clock, the epochs back to back."""
    out, t = [], start
    for w in walls:
        out.append((t, t + w))
        t += w
    return out


def cpu_busy_in(events: Iterable[Event], node: str, t0: float, t1: float) -> float:
    """Processor seconds of `node` inside [t0, t1] (events clipped to the window)."""
    return sum(max(0.0, min(e.t1, t1) - max(e.t0, t0)) for e in events
               if e.node == node and e.resource_name == node)


def idle_per_epoch(events: Sequence[Event], node: str, walls: Sequence[float],
                   warmup: int = 1, start: float = 0.0) -> float:
    """The mean over the epochs after the warm-up of epoch time minus `node`'s busy time."""
    windows = epoch_windows(walls, start)[warmup:]
    return statistics.fmean(b - a - cpu_busy_in(events, node, a, b) for a, b in windows)


# ---------------------------------------------------------------- per-action errors


def node_class(name: str) -> str:
    """`owner` for any data owner, `aggregator`, else `compute`."""
    if owner_index(name) is not None:
        return OWNER
    return AGGREGATOR if name == AGGREGATOR else COMPUTE


def action_class(resource: str, kind: str) -> tuple[str, str]:
    """(node class, action kind) of a processor's action, (link class, message kind) of a
    link's: `("owner", "0F")`, `("compute", "STEP1")`, `("owner->compute", "ACT")`."""
    src, arrow, dst = resource.partition("->")
    if not arrow:
        return node_class(resource), kind
    msg = Action.from_str(kind).msg
    return f"{node_class(src)}->{node_class(dst)}", str(msg)


def class_errors(rows: Iterable[ActionRow]) -> dict[tuple[str, str], float]:
    """Per action class, the error of the simulated mean duration against the measured one,
    each mean pooled over the resources of the class (weighted by their counts). Classes
    measured or simulated nowhere, or measured at 0 s, are left out."""
    sums: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        s = sums.setdefault(action_class(r.resource, r.kind), [0.0, 0, 0.0, 0])
        if r.measured_s is not None:
            s[0] += r.measured_s * r.measured_n
            s[1] += r.measured_n
        if r.simulated_s is not None:
            s[2] += r.simulated_s * r.simulated_n
            s[3] += r.simulated_n
    out = {}
    for key, (m, mn, s_, sn) in sorted(sums.items()):
        if mn and sn and m > 0:
            out[key] = pct_error(s_ / sn, m / mn)
    return out


def median_class_errors(per_run: Iterable[Mapping[tuple[str, str], float]]
                        ) -> dict[tuple[str, str], tuple[float, int]]:
    """Per action class, the median over the runs that have it, and how many runs do."""
    seen: dict[tuple[str, str], list[float]] = {}
    for run in per_run:
        for key, err in run.items():
            seen.setdefault(key, []).append(err)
    return {key: (median(v), len(v)) for key, v in sorted(seen.items())}
