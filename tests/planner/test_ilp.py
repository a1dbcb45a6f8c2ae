"""The cuts ILP against brute-force enumeration, memory caps, infeasibility reasons."""

from __future__ import annotations

import itertools
import random

import pytest

from mpsl.plan import make_plan
from planner.cost import simulate
from planner.cutmodel import build
from planner.ilp import Infeasible, highs_available, solve_cuts, solve_model
from planner.profile import LayerProfile, Profile
from planner.resources import BYTES_PER_MB, node_profiles

from .util import topo

NODES = [{"name": "node1", "address": "tcp://127.0.0.1:5590"},
         {"name": "node2", "address": "tcp://127.0.0.1:5591", "compute_scale": 2.0}]
SHAPES = {  # mode, labels, compute nodes
    "pipar": ("pipar", "shared", NODES[:1]),
    "chain": ("pipar", "shared", NODES),
    "mpsl1": ("mpsl", "local", NODES[:1]),
    "mpsl2": ("mpsl", "local", NODES),
    "sfl": ("sfl", "shared", NODES[:1]),
    "sl": ("sl", "shared", NODES[:1]),
}


def random_profile(rng: random.Random, layers: int) -> Profile:
    return Profile(tuple(
        LayerProfile(f"l{i}", rng.uniform(0, 1e-3), rng.uniform(0, 1e-3), rng.uniform(0, 1e-3),
                     rng.uniform(0, 2e-3), rng.uniform(0, 1e-4), rng.randint(100, 50000),
                     rng.randint(1000, 300000), rng.randint(100, 60000))
        for i in range(layers)), "random")


def random_instance(seed: int):
    rng = random.Random(seed)
    shape = list(SHAPES)[seed % len(SHAPES)]
    mode, labels, nodes = SHAPES[shape]
    owners = {"count": rng.randint(1, 3), "uplink_mbps": rng.choice([None, 5, 20, 100]),
              "downlink_mbps": rng.choice([10, 50]), "latency_ms": rng.choice([0, 5])}
    if owners["count"] > 1 and rng.random() < 0.5:  # a second kind of owner
        owners["overrides"] = [{"index": 1, "uplink_mbps": 2, "compute_scale": 3.0}]
    t = topo(mode=mode, labels=labels, compute_nodes=nodes, data_owners=owners,
             training={"batch_size": rng.choice([8, 16]), "momentum": rng.choice([0, 0.9])},
             plan={"auto": True}, links={"compute_mbps": rng.choice([None, 50, 200])})
    prof = random_profile(rng, rng.randint(len(nodes) + 3, 8))
    profs = node_profiles(t, prof)
    ns = [1 if mode in ("sfl", "sl") else rng.randint(1, 8) for _ in t.owners]
    model = build(t, profs, ns, round_iterations=rng.choice([None, 2, 20]))
    L, P = model.num_layers, model.num_parts
    pinned = (rng.randrange(1, L),) if rng.random() < 0.3 else ()
    space = [c for c in itertools.combinations(range(1, L), P - 1) if set(pinned) <= set(c)]
    # caps at random quantiles of the memory each node would need over the space
    for node in model.memory:
        if rng.random() < 0.6:
            need = sorted(model.memory[node].value((0, *c, L)) for c in space)
            model.caps[node] = need[rng.randrange(len(need))] * (1 + 1e-12)
        else:
            model.caps[node] = None
    return model, pinned, space


def brute_force(model, pinned, space):
    scored = [(model.evaluate(c)[0], c) for c in space if model.fits(c)]
    return sorted(scored)


@pytest.mark.parametrize("seed", range(24))
def test_ilp_equals_brute_force(seed):
    model, pinned, space = random_instance(seed)
    best = brute_force(model, pinned, space)
    if not best:
        with pytest.raises(Infeasible):
            solve_model(model, pinned)
        return
    res = solve_model(model, pinned)
    assert res.status == "Optimal"
    assert res.objective_T == pytest.approx(best[0][0], rel=1e-5)
    assert model.fits(res.cuts)
    assert set(pinned) <= set(res.cuts)
    for node, used in res.memory.items():
        cap = model.caps.get(node) or model.caps.get(node.split("->")[0])
        assert cap is None or used <= cap * (1 + 1e-9)
    if len(best) == 1 or best[1][0] > best[0][0] * (1 + 1e-4):  # a unique optimum
        assert res.cuts == best[0][1]


def two_hop(**owners):
    t = topo(training={"batch_size": 8}, plan={"auto": True, "micro_batches": 4},
             data_owners={"count": 2, "uplink_mbps": 10, "downlink_mbps": 20, **owners})
    sizes = [40000, 20000, 10000, 5000, 40]
    prof = Profile(tuple(LayerProfile(f"l{i}", 0, 1e-3 * (i + 1), 0, 2e-3 * (i + 1), 1e-4,
                                      sizes[i], 10 ** (i + 3), sizes[i] * 2)
                         for i in range(5)), "t")
    return t, prof


def test_memory_cap_binds():
    t, prof = two_hop()
    free = solve_cuts(prof, t)
    need = free.memory["owner0"]
    capped = solve_cuts(prof, t, memory_caps={"owner0": need - 1})
    assert capped.cuts != free.cuts
    assert capped.memory["owner0"] <= need - 1
    assert capped.objective_T >= free.objective_T
    model = build(t, node_profiles(t, prof), [4, 4], round_iterations=None)
    model.caps["owner0"] = need - 1
    space = list(itertools.combinations(range(1, 5), 1))
    best = brute_force(model, (), space)
    res = solve_model(model)
    assert res.cuts == best[0][1]


def test_memory_mb_from_topology_binds():
    t, prof = two_hop()
    free = solve_cuts(prof, t)
    mb = (free.memory["owner0"] - 1) / BYTES_PER_MB
    t2, _ = two_hop(memory_mb=mb)
    res = solve_cuts(prof, t2)
    assert res.cuts != free.cuts and res.memory["owner0"] <= mb * BYTES_PER_MB


def test_infeasible_names_the_node():
    t, prof = two_hop(memory_mb=0.001)
    with pytest.raises(Infeasible, match=r"owner0 cannot hold any part .* MB > 0\.0 MB"):
        solve_cuts(prof, t)


def test_fl_that_does_not_fit():
    t = topo(mode="fl", data_owners={"count": 1, "memory_mb": 1})
    prof = Profile.synthetic(4, param_bytes=1 << 20)
    with pytest.raises(Infeasible, match=r"FL does not fit on owner0: needs [\d.]+ MB > 1\.0 MB"):
        solve_cuts(prof, t)


def test_pinned_cuts_from_topology():
    t = topo(mode="mpsl", labels="local", compute_nodes=NODES,
             plan={"auto": True, "pinned_cuts": [2, 6], "micro_batches": 2})
    res = solve_cuts(Profile.synthetic(8), t)
    assert {2, 6} <= set(res.cuts) and len(res.cuts) == 3  # pinned: among the cuts
    with pytest.raises(Infeasible, match="pinned"):
        solve_cuts(Profile.synthetic(8), t, pinned_cuts=[9])


@pytest.mark.parametrize("step_costs", [False, True])
def test_loads_match_simulated_busy_time(step_costs):
    """One full-batch iteration: the ILP's busy seconds are the simulator's; with step costs,
    also the STEP's cost per part and its wake-up on an emulated owner (the U-shape's owner
    steps its two parts in one STEP)."""
    rng = random.Random(7)
    owners = {"count": 3, "uplink_mbps": 7, "downlink_mbps": 30}
    if step_costs:
        owners["overrides"] = [{"index": 1, "compute_scale": 2.0}]
    t = topo(mode="mpsl", labels="local", compute_nodes=NODES, training={"batch_size": 12},
             plan={"auto": True, "micro_batches": 5}, data_owners=owners,
             links={"compute_mbps": 80})
    prof = random_profile(rng, 7)
    if step_costs:
        prof = Profile(prof.layers, prof.source, step_s=3e-4, wake_step_s=2e-4)
    res = solve_cuts(prof, t, round_iterations=None)
    est = simulate(t, make_plan(t, 7, res.cuts), prof, iterations=1, record=True)
    for resource, busy in res.loads.items():
        averaging = sum(e.t1 - e.t0 for e in est.events
                        if e.resource == resource and e.kind == "AVG")
        assert est.busy_s[resource] - averaging == pytest.approx(busy, rel=1e-9), resource


def test_exclude_gives_the_next_best():
    t, prof = two_hop()
    first = solve_cuts(prof, t)
    second = solve_cuts(prof, t, exclude=[first.cuts])
    assert second.cuts != first.cuts and second.objective_T >= first.objective_T


@pytest.mark.skipif(not highs_available(), reason="highspy is not installed")
def test_highs_agrees_with_cbc():
    model, pinned, space = random_instance(3)
    a = solve_model(model, pinned, solver="cbc")
    b = solve_model(model, pinned, solver="highs")
    assert b.solver == "highs" and b.objective_T == pytest.approx(a.objective_T, rel=1e-5)


def test_micro_batch_size_sets_n():
    t, prof = two_hop()
    by_size = solve_cuts(prof, t, micro_batch_size=3)  # B = 8: N = 3
    by_n = solve_cuts(prof, t, micro_batches=3)
    assert by_size.cuts == by_n.cuts and by_size.objective_T == by_n.objective_T
