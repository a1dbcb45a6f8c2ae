"""Per-owner cuts chosen jointly (planner.owner_cuts): the MILP against brute force over every
choice of cut tuple per group, on small random heterogeneous instances; the separable bound
against the best simulated epoch of every per-owner plan."""

from __future__ import annotations

import itertools
import os
import random

import pytest

from mpsl.plan import make_plan
from mpsl.training import iterations_per_epoch, owner_samples
from planner.cost import simulate
from planner.owner_cuts import brute_force, columns, common_cuts, evaluate, separable_bound, solve
from planner.resources import memory_caps, node_profiles

from .test_ilp import NODES, random_profile
from .util import topo

SHAPES = {"pipar": ("pipar", "shared", NODES[:1]), "mpsl1": ("mpsl", "local", NODES[:1]),
          "chain": ("pipar", "shared", NODES)}


def random_instance(seed: int, layers: tuple[int, int] = (4, 7)):
    rng = random.Random(seed)
    mode, labels, nodes = SHAPES[list(SHAPES)[seed % len(SHAPES)]]
    count = rng.randint(2, 4)
    owners = {"count": count, "uplink_mbps": rng.choice([5, 20, 100]),
              "downlink_mbps": rng.choice([10, 50]), "latency_ms": rng.choice([0, 5]),
              "overrides": [{"index": k, "compute_scale": 2.0,
                             "uplink_mbps": rng.choice([1, 5, 50])}
                            for k in range(1, count, 2)]}  # half of them 2x slower
    t = topo(mode=mode, labels=labels, compute_nodes=nodes, data_owners=owners,
             training={"batch_size": rng.choice([4, 8])}, plan={"auto": True},
             links={"compute_mbps": rng.choice([None, 50])})
    prof = random_profile(rng, rng.randint(*layers))
    return t, node_profiles(t, prof), rng


SLOW = not os.environ.get("MPSL_SLOW")
SEEDS = [s if s < 8 else pytest.param(s, marks=pytest.mark.skipif(SLOW, reason="MPSL_SLOW=1"))
         for s in range(16)]


@pytest.mark.parametrize("seed", SEEDS)
def test_joint_choice_equals_brute_force(seed):
    t, profs, rng = random_instance(seed)
    ns = [rng.randint(1, 4) for _ in t.owners]
    cols = columns(t, profs, ns, round_iterations=rng.choice([None, 2.0]))
    assert len(cols) >= 2  # fast and slow owners are groups of their own
    caps = dict(memory_caps(t))
    for n in t.chain:  # a cap at a random share of what the nodes would need
        if rng.random() < 0.5:
            need = sorted(sum(float(c.memory[n][i]) for c, i in zip(cols, choice))
                          for choice in itertools.product(*(range(len(c.rows)) for c in cols)))
            caps[n] = need[rng.randrange(len(need))] * (1 + 1e-12)
    best = brute_force(cols, caps)
    got = solve(cols, caps)
    if best is None:
        assert got is None
        return
    assert got is not None
    assert got.objective == pytest.approx(best[0], rel=1e-6, abs=1e-12)
    choice = [next(i for i, r in enumerate(c.rows) if tuple(r) == got.cuts[c.owners[0]])
              for c in cols]
    assert evaluate(cols, choice, caps) == pytest.approx(best[0], rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("seed", [1] + [pytest.param(s, marks=pytest.mark.skipif(
    SLOW, reason="MPSL_SLOW=1")) for s in (0, 2, 3)])
def test_separable_bound_is_below_every_per_owner_plan(seed):
    """Brute force over every owner's cut tuple and N in 1..2, simulated: never below."""
    t, profs, _ = random_instance(seed * 3, layers=(4, 4))  # PiPar: three cut tuples
    B = t.training.batch_size
    batches = [[min(B, n - j * B) for j in range(iterations_per_epoch(t.training, n))]
               for n in owner_samples(t)]
    bound = separable_bound(t, profs, batches, 2)
    L = 4
    K = len(t.owners)
    best = None
    for cuts in itertools.product(range(1, L), repeat=K):
        for ns in itertools.product((1, 2), repeat=K):
            plan = make_plan(t, L, cuts=[cuts[0]], micro_batches=list(ns),
                             owner_cuts={k: (c,) for k, c in enumerate(cuts)})
            est = simulate(t, plan, profs, steady=False)
            best = est.epoch_s if best is None else min(best, est.epoch_s)
    assert bound <= best
    assert bound > 0.2 * best  # not vacuous


def test_common_cuts_are_those_most_owners_take():
    from planner.owner_cuts import JointChoice

    assert common_cuts(JointChoice({0: (2,), 1: (1,), 2: (1,)}, 0.0), 3) == (1,)
    assert common_cuts(JointChoice({0: (2,), 1: (1,)}, 0.0), 2) == (2,)
