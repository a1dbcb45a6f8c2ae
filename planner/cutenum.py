"""Exact cuts by enumeration: the cuts ILP's objective at every cut tuple at once.

A model of L layers in P parts has C(L-1, P-1) cut tuples (vgg19 in five parts: 3,060); the
cut model's terms are linear forms and path graphs, so every tuple's T, memory and the ILP's
tie-break term come out of a few array operations per form (`planner.forms.values_all`,
`PathGraph.ends_all`). Up to `ENUM_MAX` tuples this is the planner's solver (`auto`): it is
exact (the ILP's optimum, brute force) and takes milliseconds where a MIP solver takes tenths
of a second per solve; the ILP (`planner.ilp`) remains for larger spaces and as a choice.

The objective is the ILP's: T + A + TIE_BREAK / (number of terms) x their sum, with the
earliest start times on the paths (the ILP's optimum puts them there). Tuples whose objective
lies within float rounding of the least are tied; the first in lexicographic order wins.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from planner.cutmodel import CutModel

ENUM_MAX = 100_000  # cut tuples: past this, the ILP
CHUNK = 4096  # cut rows evaluated at once (a path graph's start times: vertices x rows)
TIE = 1e-12  # objectives within this relative distance of the least are tied


@dataclass
class Scores:
    """Every cut tuple holding the pinned cuts (`bounds`: rows (0, *cuts, L)), its T + A
    (`t`), the ILP's objective with its tie-break (`objective`) and memory per node."""

    bounds: np.ndarray
    t: np.ndarray
    objective: np.ndarray
    memory: dict[str, np.ndarray]
    seconds: float

    def fits(self, caps: dict[str, float | None]) -> np.ndarray:
        """Rows within every cap (as `CutModel.fits`)."""
        ok = np.ones(len(self.bounds), dtype=bool)
        for node, used in self.memory.items():
            cap = caps.get(node)
            if cap is not None:
                ok &= used <= cap * (1 + 1e-9)
        return ok


def space_size(model: CutModel, pinned: Sequence[int]) -> int:
    """How many cut tuples hold the pinned cuts."""
    L, P = model.num_layers, model.num_parts
    free = P - 1 - len(set(pinned))
    return math.comb(max(0, L - 1 - len(set(pinned))), free) if free >= 0 else 0


def scores(model: CutModel, pinned: Sequence[int], tie_break: float) -> Scores:
    """Every tuple's scores, computed once per model and pinned cuts (kept on the model)."""
    key = ("scores", tuple(sorted(set(pinned))), tie_break)
    got = model.cache.get(key)
    if isinstance(got, Scores):
        return got
    started = time.perf_counter()
    L, P = model.num_layers, model.num_parts
    rest = [c for c in range(1, L) if c not in set(pinned)]
    rows = [tuple(sorted((*pinned, *c))) for c in itertools.combinations(rest, P - 1 - len(
        set(pinned)))]
    bounds = np.array([(0, *c, L) for c in rows], dtype=np.int64).reshape(len(rows), P + 1)
    parts = [_chunk(model, bounds[i:i + CHUNK], tie_break) for i in range(0, len(bounds), CHUNK)]
    t = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0)
    obj = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
    memory = {n: f.values(bounds) for n, f in model.memory.items()}
    out = model.cache[key] = Scores(bounds, t, obj, memory, time.perf_counter() - started)
    return out


def _chunk(model: CutModel, bounds: np.ndarray, tie_break: float
           ) -> tuple[np.ndarray, np.ndarray]:
    """(T + A, the ILP's objective) at the rows of `bounds`."""
    terms = [f.values(bounds) for f in model.loads.values()]
    for g in model.paths.values():
        terms.extend(g.ends_all(bounds))
    R = len(bounds)
    stack = np.vstack(terms) if terms else np.zeros((1, R))
    T = np.maximum(stack.max(axis=0), 0.0)
    agg = [f.values(bounds) for f in model.aggregation.values()]
    A = np.maximum(np.max(agg, axis=0), 0.0) if agg else np.zeros(R)
    tie = tie_break / max(1, len(terms)) * stack.sum(axis=0)
    return T + A, T + A + tie


def best_row(sc: Scores, ok: np.ndarray) -> int | None:
    """The row of least objective among `ok` (ties: the first), None where none is ok."""
    if not ok.any():
        return None
    obj = np.where(ok, sc.objective, np.inf)
    least = obj.min()
    tied = obj <= least + abs(least) * TIE
    return int(np.argmax(tied))


def excluded(sc: Scores, exclude: Sequence[Sequence[int]]) -> np.ndarray:
    """Rows equal to one of the `exclude` tuples."""
    out = np.zeros(len(sc.bounds), dtype=bool)
    P1 = sc.bounds.shape[1] - 2
    for cuts in exclude:
        if len(cuts) == P1:
            out |= (sc.bounds[:, 1:-1] == np.asarray(cuts, dtype=np.int64)).all(axis=1)
    return out
