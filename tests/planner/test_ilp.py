"""The cuts ILP against brute-force enumeration and the simulator (busy time, paths, memory),
memory caps, infeasibility reasons; for both schedules."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from mpsl.plan import make_plan, owner_micro_batches
from mpsl.spec import ScheduleSpec
from planner.cost import simulate
from planner.cutmodel import build
from planner.ilp import Infeasible, solve_cuts, solve_model
from planner.profile import LayerProfile, Profile
from planner.resources import BYTES_PER_MB, node_profiles

from .util import per_iteration_busy, topo

SCHEDULES = ("gpipe", "1f1b")

NODES = [{"name": "node1", "address": "tcp://127.0.0.1:5590"},
         {"name": "node2", "address": "tcp://127.0.0.1:5591", "compute_scale": 2.0}]
CASES = {  # mode, labels, compute nodes (node2 is emulated: it wakes on every pass)
    "pipar": ("pipar", "shared", NODES[:1]),
    "chain": ("pipar", "shared", NODES),
    "mpsl1": ("mpsl", "local", NODES[:1]),
    "mpsl2": ("mpsl", "local", NODES),
    "sfl": ("sfl", "shared", NODES[:1]),
    "sl": ("sl", "shared", NODES[:1]),
    "fl": ("fl", "local", []),
}
SHAPES = [shape for shape in CASES if shape != "fl"]  # of the random instances


def random_profile(rng: random.Random, layers: int) -> Profile:
    return Profile(tuple(
        LayerProfile(f"l{i}", rng.uniform(0, 1e-3), rng.uniform(0, 1e-3), rng.uniform(0, 1e-3),
                     rng.uniform(0, 2e-3), rng.uniform(0, 1e-4), rng.randint(100, 50000),
                     rng.randint(1000, 300000), rng.randint(100, 60000))
        for i in range(layers)), "random")


def random_instance(seed: int):
    rng = random.Random(seed)
    mode, labels, nodes = CASES[SHAPES[seed % len(SHAPES)]]
    owners = {"count": rng.randint(1, 3), "uplink_mbps": rng.choice([None, 5, 20, 100]),
              "downlink_mbps": rng.choice([10, 50]), "latency_ms": rng.choice([0, 5])}
    if owners["count"] > 1 and rng.random() < 0.5:  # a second kind of owner
        owners["overrides"] = [{"index": 1, "uplink_mbps": 2, "compute_scale": 3.0}]
    schedule = SCHEDULES[(seed // len(SHAPES)) % 2]
    t = topo(mode=mode, labels=labels, compute_nodes=nodes, data_owners=owners,
             training={"batch_size": rng.choice([8, 16]), "momentum": rng.choice([0, 0.9])},
             plan={"auto": True}, links={"compute_mbps": rng.choice([None, 50, 200])},
             schedule=schedule)
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


def test_evaluate_all_is_evaluate():
    """The vectorized enumeration gives every cut tuple's T and memory as evaluate() does."""
    for seed in (0, 3, 9, 21):
        model, _, space = random_instance(seed)
        t, memory = model.evaluate_all(np.array(space))
        for i, cuts in enumerate(space):
            T, _, _, mem = model.evaluate(cuts)
            assert t[i] == pytest.approx(T, rel=1e-9) and model.t_at(cuts) == T
            assert all(memory[n][i] == pytest.approx(mem[n], rel=1e-9) for n in model.memory)


def brute_force(model, pinned, space):
    scored = [(model.evaluate(c)[0], c) for c in space if model.fits(c)]
    return sorted(scored)


@pytest.mark.parametrize("solver", ["highs", "enum"])
@pytest.mark.parametrize("seed", range(36))
def test_ilp_equals_brute_force(seed, solver):
    """The ILP's optimum (and the enumeration's) is brute force's over evaluate(), and the
    solver's own T + A (its start-time variables on the paths) is evaluate()'s T at the cuts
    it returns."""
    model, pinned, space = random_instance(seed)
    best = brute_force(model, pinned, space)
    if not best:
        with pytest.raises(Infeasible):
            solve_model(model, pinned, solver)
        return
    res = solve_model(model, pinned, solver)
    assert res.solver == solver
    assert res.status == "Optimal"
    assert res.objective_T == pytest.approx(best[0][0], rel=1e-5)
    assert res.solved_T == pytest.approx(res.objective_T, rel=1e-5)
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


def load_case(shape, schedule, step_costs=False, seed=7):
    rng = random.Random(seed)
    mode, labels, nodes = CASES[shape]
    owners = {"count": 3, "uplink_mbps": 7, "downlink_mbps": 30, "latency_ms": 2,
              "overrides": [{"index": 1, "compute_scale": 2.0, "uplink_mbps": 3}]}
    t = topo(mode=mode, labels=labels, compute_nodes=nodes, training={"batch_size": 13},
             plan={"auto": True, "micro_batches": 5}, data_owners=owners,
             links={"compute_mbps": 80}, schedule=schedule)
    prof = random_profile(rng, 7)
    if step_costs:
        prof = Profile(prof.layers, prof.source, step_s=3e-4, wake_step_s=2e-4)
    return t, prof


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("shape", list(CASES))
def test_loads_match_simulated_busy_time(shape, schedule):
    """One full-batch iteration of every owner: the ILP's busy seconds of every processor and
    link are the simulator's, less the round-level work (averaging, sync, PARAMS, GLOBAL); no
    simulated resource with per-iteration work is missing. SL's owners take turns: the shared
    resources' busy time is one owner's iteration."""
    t, prof = load_case(shape, schedule)
    _check_loads(t, prof)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_loads_with_step_costs(schedule):
    """The STEP's cost per part and its wake-up on an emulated owner (the U-shape's owner
    steps its two parts in one STEP) are the simulator's too."""
    t, prof = load_case("mpsl2", schedule, step_costs=True)
    _check_loads(t, prof)


def _check_loads(t, prof):
    model = build(t, node_profiles(t, prof), owner_micro_batches(t))
    res = solve_model(model)
    est = simulate(t, make_plan(t, 7, res.cuts), prof, iterations=1, record=True)
    busy = per_iteration_busy(est)
    expected: dict[str, float] = {}
    members = {g.rep: len(g.members) for g in model.groups}
    for resource, seconds in res.loads.items():  # SL: `node/owner0` is one group's turn
        base, _, rep = resource.partition("/")
        turns = 1 if t.mode != "sl" or "owner" in base else members[rep] if rep else len(t.owners)
        expected[base] = expected.get(base, 0.0) + seconds * turns
    for resource, seconds in expected.items():
        assert busy.pop(resource) == pytest.approx(seconds, rel=1e-9), resource
    assert {r: v for r, v in busy.items() if v > 1e-12 and r != "aggregator"} == {}


def one_owner(shape, schedule, seed, count=1):
    rng = random.Random(seed)
    mode, labels, nodes = CASES[shape]
    owners = {"count": count, "uplink_mbps": rng.choice([None, 3, 20]),
              "downlink_mbps": rng.choice([10, 40]), "latency_ms": rng.choice([0, 4]),
              "compute_scale": rng.choice([1.0, 2.0])}
    sched = schedule if schedule == "gpipe" else {"name": schedule,
                                                  "max_in_flight": rng.choice([None, 1, 2])}
    t = topo(mode=mode, labels=labels, compute_nodes=nodes, data_owners=owners,
             training={"batch_size": rng.choice([8, 13])},
             plan={"auto": True, "micro_batches": rng.randint(1, 6)},
             links={"compute_mbps": rng.choice([None, 30])}, schedule=sched)
    L = rng.randint(len(nodes) + 3, 8)
    prof = random_profile(rng, L)  # wake-ups of zero
    model = build(t, node_profiles(t, prof), owner_micro_batches(t))
    cuts = tuple(sorted(rng.sample(range(1, L), model.num_parts - 1)))
    paths = model.evaluate(cuts)[2]
    est = simulate(t, make_plan(t, L, cuts), prof, iterations=1)
    return paths, est


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("shape", ["pipar", "sfl", "sl", "mpsl1"])
def test_path_is_the_simulated_iteration_of_one_owner(shape, schedule, seed):
    """Each node gets the owner's messages over one link: the longest path through the
    iteration's tasks is the simulated iteration, exactly."""
    paths, est = one_owner(shape, schedule, seed)
    assert paths["owner0 path"] == pytest.approx(est.iteration_s, rel=1e-9)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("shape", ["chain", "mpsl2"])
def test_path_bounds_a_longer_chain(shape, schedule):
    """A middle node fed over two links interleaves its streams as messages come: the path,
    which does not order them, is at most the simulated iteration."""
    for seed in range(6):
        paths, est = one_owner(shape, schedule, seed)
        assert paths["owner0 path"] <= est.iteration_s * (1 + 1e-9)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("shape", ["pipar", "mpsl1", "sl"])
def test_path_of_several_owners_bounds_their_iteration(shape, schedule):
    """Owners sharing compute nodes wait for each other: one owner's path is at most the mean
    simulated iteration."""
    for seed in range(3):
        paths, est = one_owner(shape, schedule, seed, count=3)
        assert 0 < paths["owner0 path"] <= est.iteration_s * (1 + 1e-9)


def test_1f1b_holds_max_in_flight_micro_batches():
    """Part 0's activations on the owner: B under gpipe, max_in_flight micro-batches under
    1f1b; a server that runs F and B in one task holds one micro-batch either way."""
    t = topo(training={"batch_size": 12}, plan={"auto": True, "micro_batches": 6},
             data_owners={"count": 2})
    prof = Profile.synthetic(4, out_bytes=0, param_bytes=0, act_bytes=1000)
    profs = node_profiles(t, prof)
    gpipe = build(t, profs, [6, 6])
    ofob = build(t, profs, [6, 6], schedule=ScheduleSpec("1f1b", 2))
    cuts = (2,)
    g, o = gpipe.evaluate(cuts)[3], ofob.evaluate(cuts)[3]
    assert g["owner0"] == 2 * 1000 * 12  # two layers x B
    assert o["owner0"] == pytest.approx(g["owner0"] * 2 / 6)
    assert g["server"] == o["server"] == 2 * 1000 * 2  # one micro-batch of 2
    default = build(t, profs, [6, 6], schedule=ScheduleSpec("1f1b"))  # one per part: 2
    assert default.evaluate(cuts)[3]["owner0"] == o["owner0"]


def test_memory_of_compute_nodes_counts_live_owners():
    """A middle part's activations stay live between tasks: B per owner; the buffers: the
    samples received at each cut, per owner."""
    t = topo(mode="mpsl", labels="local", compute_nodes=NODES[:1], training={"batch_size": 8},
             plan={"auto": True, "micro_batches": 4}, data_owners={"count": 3})
    prof = Profile.synthetic(4, out_bytes=10, param_bytes=0, act_bytes=1000)
    model = build(t, node_profiles(t, prof), [4, 4, 4])
    memory = model.evaluate((1, 3))[3]
    assert memory["node1"] == 3 * (2 * 1000 * 8 + 2 * 10 * 8)  # 2 layers; cuts 1 and 3
    # the owner: part 0 holds B, the tail part one micro-batch, buffers B at both cuts
    assert memory["owner0"] == 1000 * 8 + 1000 * 2 + 2 * 10 * 8


def test_exclude_gives_the_next_best():
    t, prof = two_hop()
    first = solve_cuts(prof, t)
    second = solve_cuts(prof, t, exclude=[first.cuts])
    assert second.cuts != first.cuts and second.objective_T >= first.objective_T


@pytest.mark.parametrize("seed", range(0, 36, 5))
def test_highs_agrees_with_cbc(seed):
    """HiGHS in process returns CBC's cuts and T (ties broken alike by the tie-break term)."""
    model, pinned, _ = random_instance(seed)
    try:
        a = solve_model(model, pinned, solver="cbc")
    except Infeasible as err:
        with pytest.raises(Infeasible, match=str(err).split("(")[0][:30]):
            solve_model(model, pinned, solver="highs")
        return
    b = solve_model(model, pinned, solver="highs")
    assert a.solver == "cbc" and b.solver == "highs"
    assert b.cuts == a.cuts and b.objective_T == pytest.approx(a.objective_T, rel=1e-9)
    assert b.solved_T == pytest.approx(a.solved_T, rel=1e-6)


def test_micro_batch_size_sets_n():
    t, prof = two_hop()
    by_size = solve_cuts(prof, t, micro_batch_size=3)  # B = 8: N = 3
    by_n = solve_cuts(prof, t, micro_batches=3)
    assert by_size.cuts == by_n.cuts and by_size.objective_T == by_n.objective_T
