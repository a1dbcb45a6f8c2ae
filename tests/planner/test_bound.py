"""The lower bound on every plan's epoch (planner.bound): never above the brute-force optimum of
the simulated epoch over the whole space (cuts, N per owner, schedules), tight where the
optimum is an owner's chain, and reported with the plan."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

import pytest

from mpsl.actions import Action, Msg, Task, Trigger
from mpsl.plan import SINGLE_BATCH_MODES, make_plan, owner_micro_batches, placement_for
from mpsl.schedule import SCHEDULES
from planner.aps import choose_plan
from planner.bound import MARGIN, lower_bound
from planner.boundterms import NoWakeWalk, orders_forced
from planner.cost import simulate
from planner.cutmodel import owner_groups
from planner.profile import LayerProfile, Profile
from planner.resources import (
    AVERAGE_BYTES_PER_S,
    HEADER_BYTES,
    LABEL_BYTES,
    max_micro_batches,
    node_profiles,
)

from .test_ilp import CASES
from .util import topo

SHAPES = list(CASES)  # pipar, chain, mpsl1, mpsl2, sfl, sl, fl
SCHEDULES_LIST = list(SCHEDULES)


def random_profile(rng: random.Random, layers: int) -> Profile:
    """Random linear layers, some measured at a few sizes (piecewise, not monotone), and
    random wake-ups and STEP costs."""
    out = []
    for i in range(layers):
        lp = LayerProfile(f"l{i}", rng.uniform(0, 1e-3), rng.uniform(0, 1e-3),
                          rng.uniform(0, 1e-3), rng.uniform(0, 2e-3), rng.uniform(0, 1e-4),
                          rng.randint(100, 50000), rng.randint(1000, 300000),
                          rng.randint(100, 60000))
        if rng.random() < 0.3:
            lp = LayerProfile(lp.name, lp.fwd_a, lp.fwd_c, lp.bwd_a, lp.bwd_c, lp.opt_s,
                              lp.out_bytes, lp.param_bytes, lp.act_bytes,
                              tuple((b, rng.uniform(0, 3e-3), rng.uniform(0, 3e-3))
                                    for b in (1, 2, 4)))
        out.append(lp)
    return Profile(tuple(out), "random", {}, rng.uniform(0, 5e-4), rng.uniform(0, 5e-4),
                   rng.uniform(0, 2e-4), rng.uniform(0, 2e-4))


def random_instance(seed: int):
    rng = random.Random(seed)
    mode, labels, nodes = CASES[SHAPES[seed % len(SHAPES)]]
    owners = {"count": rng.randint(1, 3), "uplink_mbps": rng.choice([None, 5, 20]),
              "downlink_mbps": rng.choice([10, 50]), "latency_ms": rng.choice([0, 3])}
    if owners["count"] > 1 and rng.random() < 0.5:  # a second kind of owner
        owners["overrides"] = [{"index": 1, "uplink_mbps": 2, "compute_scale": 3.0}]
    t = topo(mode=mode, labels=labels, compute_nodes=nodes, data_owners=owners,
             training={"batch_size": rng.choice([3, 4]), "momentum": rng.choice([0, 0.9]),
                       "aggregate_every": rng.choice([None, 2])},
             dataset={"options": {"size": rng.randint(6, 26)}},  # partial batches too
             plan={"auto": True}, links={"compute_mbps": rng.choice([None, 50])},
             schedule=SCHEDULES_LIST[(seed // len(SHAPES)) % 2])
    return t, random_profile(rng, rng.randint(len(nodes) + 2, 5))


def brute_force(t, prof) -> float:
    """The least simulated epoch (every event simulated) over every cut tuple, every N per
    owner (all combinations up to two owners, the same N for all beyond) and schedule."""
    profs = node_profiles(t, prof)
    L, P = prof.num_layers, len(placement_for(t))
    K = len(t.owners)
    single = t.mode in SINGLE_BATCH_MODES or P == 1
    ns = [1] if single else range(1, max_micro_batches(t) + 1)
    vectors = (list(itertools.product(ns, repeat=K)) if K <= 2 else [(n,) * K for n in ns])
    best = float("inf")
    for cuts in itertools.combinations(range(1, L), P - 1):
        for schedule in [t.schedule.name] if single else SCHEDULES_LIST:
            for vec in vectors:
                plan = make_plan(t, L, cuts, list(vec), schedule)
                best = min(best, simulate(t, plan, profs, steady=False).epoch_s)
    return best


@pytest.mark.parametrize("seed", range(14))
def test_bound_is_never_above_the_brute_force_optimum(seed):
    t, prof = random_instance(seed)
    bound = lower_bound(t, prof)
    optimum = brute_force(t, prof)
    assert 0 < bound.seconds <= optimum
    report = choose_plan(t, prof, top=2)
    assert report.bound is not None and report.bound.seconds == bound.seconds
    assert bound.seconds <= report.best.estimate.epoch_s
    assert report.gap == pytest.approx(report.best.estimate.epoch_s / bound.seconds - 1)
    assert report.gap >= 0


def test_bound_holds_for_the_topology_own_per_owner_n():
    """Per-owner N (an override) is in the space: its plan's epoch is above the bound."""
    t = topo(training={"batch_size": 8}, plan={"cuts": [2], "micro_batches": 4},
             data_owners={"count": 2, "uplink_mbps": 5, "downlink_mbps": 20,
                          "overrides": [{"index": 1, "micro_batches": 1}]})
    prof = random_profile(random.Random(3), 4)
    assert owner_micro_batches(t) == (4, 1)
    epoch = simulate(t, make_plan(t, 4), prof, steady=False).epoch_s
    assert lower_bound(t, prof).seconds <= epoch


# ------------------------------------------------------------------------- a tight instance

F = (1e-3, 2e-3)  # forward seconds per sample of layers 0 and 1
BW = (3e-3, 1e-3)  # backward
OUT, PARAMS, OPT = 2000, 40_000, 5e-4  # layer 0's output bytes per sample, parameter bytes


def tight():
    """One owner, SFL (N = 1), two layers: one plan, whose epoch is its owner's chain: its
    iterations one after another, then PARAMS up, the average and GLOBAL down."""
    t = topo(mode="sfl", plan={"auto": True}, training={"batch_size": 4},
             dataset={"options": {"size": 40}},
             data_owners={"count": 1, "uplink_mbps": 8, "downlink_mbps": 16, "latency_ms": 2})
    prof = Profile((LayerProfile("l0", 0, F[0], 0, BW[0], OPT, OUT, PARAMS, 0),
                    LayerProfile("l1", 0, F[1], 0, BW[1], 0, 10, 100, 0)), "tight")
    return t, prof


def test_the_bound_is_tight_on_a_lone_owner_chain():
    t, prof = tight()
    b, lat = 4, 2e-3
    up, down = 8e6 / 8, 16e6 / 8  # bytes per second
    act = (OUT * b + LABEL_BYTES * b + HEADER_BYTES) / up
    grad = (OUT * b + HEADER_BYTES) / down
    iteration = F[0] * b + act + lat + (F[1] + BW[1]) * b + grad + lat + BW[0] * b + OPT
    rounds = (PARAMS + HEADER_BYTES) / up + lat + PARAMS / AVERAGE_BYTES_PER_S + (
        (PARAMS + HEADER_BYTES) / down + lat)
    expected = 10 * iteration + rounds  # 40 samples: 10 iterations, one round
    assert brute_force(t, prof) == pytest.approx(expected, rel=1e-12)
    bound = lower_bound(t, prof)
    assert bound.seconds == pytest.approx(expected * (1 - MARGIN), rel=1e-12)
    assert bound.source == "owner0's iterations and aggregations"
    assert bound.cuts == (1,) and bound.describe().endswith("at cuts [1], gpipe")
    report = choose_plan(t, prof)
    assert report.gap == pytest.approx(MARGIN, rel=1e-3)


def test_the_bound_is_tight_on_a_busy_server():
    """Eight owners on a slow server (one round): the server's work, and before it the first
    micro-batch's forward and ACT, after it the last GRAD, backward, PARAMS, averaging and
    GLOBAL; the best plan, one sample per micro-batch, leaves the server no other gap."""
    t = topo(training={"batch_size": 4}, dataset={"options": {"size": 160}},
             data_owners={"count": 8, "uplink_mbps": 1000, "downlink_mbps": 1000})
    slow, fast, out, params = 4e-3, 1e-4, 100, 100  # per sample; bytes per sample, per layer
    prof = Profile(tuple(LayerProfile(f"l{i}", 0, fast if i == 0 else slow, 0,
                                      fast if i == 0 else slow, 0, out, params, 0)
                         for i in range(3)), "slow server")
    tx = 8 / 1e9  # seconds per byte at 1000 Mbps
    work = 8 * 5 * 4 * 2 * slow  # owners x iterations x samples x (F + B) of layer 2
    head = fast + slow + (out + LABEL_BYTES + HEADER_BYTES) * tx  # one sample's F, its ACT
    tail = (out + HEADER_BYTES) * tx + slow + fast  # the last GRAD, its backward
    rounds = 2 * (2 * params + HEADER_BYTES) * tx + 8 * 2 * params / AVERAGE_BYTES_PER_S
    expected = work + head + tail + rounds
    assert brute_force(t, prof) == pytest.approx(expected, rel=1e-12)
    bound = lower_bound(t, prof)
    assert bound.seconds == pytest.approx(expected * (1 - MARGIN), rel=1e-12)
    assert bound.source == "busy time of server and its idle time as each round starts and ends"
    assert bound.cuts == (2,)


# ------------------------------------------------------------------------ the paths' orders

@pytest.mark.parametrize("schedule", SCHEDULES_LIST)
@pytest.mark.parametrize("shape", SHAPES)
def test_the_orders_of_every_schedule_are_forced(shape, schedule):
    """Each link's messages and each stream's tasks keep the lone owner's order in any run,
    so the bound uses the path of every shape the planner makes."""
    mode, labels, nodes = CASES[shape]
    t = topo(mode=mode, labels=labels, compute_nodes=nodes, training={"batch_size": 8},
             plan={"auto": True}, schedule=schedule)
    setting, groups = owner_groups(t, node_profiles(t, Profile.synthetic(6)), t.schedule)
    for n in (1, 3, 8):
        assert orders_forced(NoWakeWalk(setting, replace(groups[0], n=n)))


class FakeWalk:
    """What `orders_forced` reads of a walk: the tasks and a dry run's order."""

    def __init__(self, tasks, links):
        self.tasks, self.links = tasks, links

    def run_order(self):
        return {id(t): i for i, t in enumerate(self.tasks)}, self.links


def two_streams(barrier_between: bool):
    """Node a sends on one link to c from tasks of two streams (from owner0 and from b)."""
    f, bw, send = Action.forward, Action.backward, Action.send
    t0 = Task("owner0", 0, None, (f(0, 0), send(Msg.ACT, "a", 0)))
    tb = Task("b", 0, None, (bw(2, 1), send(Msg.GRAD, "a", 1)))
    x = Task("a", 0, Trigger("owner0", Msg.ACT, 0), (f(1, 0), send(Msg.ACT, "c", 0)))
    y = Task("a", 0, Trigger("b", Msg.GRAD, 1), (bw(1, 1), send(Msg.GRAD, "c", 1)))
    z = Task("a", 0, None, (Action.step(),))
    cx = Task("c", 0, Trigger("a", Msg.ACT, 0), (f(2, 0),))
    cy = Task("c", 0, Trigger("a", Msg.GRAD, 1), (bw(0, 1),))
    mine = [x, z, y] if barrier_between else [x, y, z]
    links = {"owner0->a": [(t0, 1)], "b->a": [(tb, 1)], "a->c": [(x, 1), (y, 1)]}
    return FakeWalk([t0, tb, *mine, cx, cy], links)


def test_a_link_fed_by_two_streams_is_not_forced():
    assert not orders_forced(two_streams(barrier_between=False))
    assert orders_forced(two_streams(barrier_between=True))


@pytest.mark.parametrize("seed", range(0, 14, 2))
def test_pruned_rows_give_the_bound_over_every_row(seed, monkeypatch):
    """The bound completes only the cut rows whose path-free terms may still be lowest: the
    value, term and cuts equal those over every row (more layers: more rows to prune)."""
    import planner.bound as bound_module

    t, _ = random_instance(seed)
    prof = random_profile(random.Random(seed), 11)
    monkeypatch.setattr(bound_module, "FIRST_ROWS", 4)
    pruned = lower_bound(t, prof)
    monkeypatch.setattr(bound_module, "FIRST_ROWS", 10 ** 9)
    every = lower_bound(t, prof)
    assert (pruned.seconds, pruned.source, pruned.cuts, pruned.schedule) == (
        every.seconds, every.source, every.cuts, every.schedule)
