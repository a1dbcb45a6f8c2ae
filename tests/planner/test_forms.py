"""Forms and path graphs: the topological order of `GraphBuilder.graph` is graphlib's."""

from __future__ import annotations

import graphlib
import random

import pytest

from planner.forms import static_order


@pytest.mark.parametrize("seed", range(40))
def test_static_order_is_graphlibs(seed):
    rng = random.Random(seed)
    count = rng.randint(1, 60)
    rank = list(range(count))
    rng.shuffle(rank)
    edges = []
    for _ in range(rng.randint(0, 3 * count)):
        a, b = rng.randrange(count), rng.randrange(count)
        if rank[a] < rank[b]:
            edges.append((a, b, None))
    ts: graphlib.TopologicalSorter[int] = graphlib.TopologicalSorter()
    for v in range(count):
        ts.add(v)
    for u, v, _ in edges:
        ts.add(v, u)
    assert static_order(count, edges) == list(ts.static_order())


def test_static_order_refuses_a_cycle():
    with pytest.raises(graphlib.CycleError):
        static_order(3, [(0, 1, None), (1, 2, None), (2, 1, None)])
