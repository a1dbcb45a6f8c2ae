"""planner.steady: skipping whole periods of the steady state gives the full simulation's
answer (epoch, busy time per processor and link, memory) on random small topologies, falls
back to every event when no period repeats, and is off when recording."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from mpsl.plan import make_plan
from planner.cost import simulate
from planner.profile import LayerProfile, Profile
from planner.rate import RateSkip
from planner.steady import SteadyState
from tests.planner.util import topo

LAYERS = 6


def _profile(rng: random.Random) -> Profile:
    layers = tuple(
        LayerProfile(f"l{i}", rng.uniform(0, 2e-4), rng.uniform(1e-5, 4e-4),
                     rng.uniform(0, 3e-4), rng.uniform(2e-5, 8e-4), rng.uniform(0, 1e-4),
                     rng.choice([256, 1024, 4096, 16384]), rng.randrange(1000, 100000),
                     rng.randrange(1000, 50000))
        for i in range(LAYERS))
    return dataclasses.replace(Profile(layers, "random"), wake_fwd_s=rng.uniform(0, 2e-4),
                               wake_bwd_s=rng.uniform(0, 2e-4), step_s=rng.uniform(0, 1e-4))


def _case(seed: int) -> tuple[Any, Any, Profile, list[int]]:
    """A random topology (K 1-6, N 1-8, pipar, sfl or mpsl, gpipe or 1f1b), its plan at random
    cuts, a random profile and random sample counts per owner."""
    rng = random.Random(seed)
    mode = rng.choice(["pipar", "sfl", "mpsl"])
    K = rng.randint(1, 6)
    chain = rng.randint(1, 2) if mode == "mpsl" else 1
    nodes = [{"name": f"node{i}", "address": f"tcp://127.0.0.1:{5900 + i}",
              "compute_scale": rng.choice([1, 1, 2.5])} for i in range(chain)]
    cuts = sorted(rng.sample(range(1, LAYERS), chain + (1 if mode == "mpsl" else 0)))
    schedule: Any = rng.choice(["gpipe", {"name": "1f1b", "max_in_flight": rng.randint(1, 3)}])
    owners: dict[str, Any] = {
        "count": K, "uplink_mbps": rng.choice([5, 20, 100]),
        "downlink_mbps": rng.choice([10, 50, 200]), "latency_ms": rng.choice([0, 2, 10]),
        "compute_scale": rng.choice([1, 1, 3])}
    if K > 1 and rng.random() < 0.5:
        owners["overrides"] = [{"index": K - 1, "compute_scale": 2, "uplink_mbps": 7}]
    t = topo(mode=mode, labels="local" if mode == "mpsl" else "shared",
             training={"batch_size": 8,
                       "aggregate_every": rng.choice([None, None, 3, 7])},
             plan={"cuts": cuts, "micro_batches": rng.randint(1, 8)}, schedule=schedule,
             data_owners=owners, compute_nodes=nodes,
             links={"compute_mbps": rng.choice([50, 1000]), "compute_latency_ms": 1})
    samples = [rng.randrange(8, 240) for _ in range(K)]
    return t, make_plan(t, LAYERS, cuts), _profile(rng), samples


def _assert_same(a: Any, b: Any) -> None:
    assert a.epoch_s == pytest.approx(b.epoch_s, rel=1e-3)
    assert set(a.busy_s) == set(b.busy_s)
    for name, v in b.busy_s.items():
        assert a.busy_s[name] == pytest.approx(v, rel=1e-6, abs=1e-9), name
    assert a.iteration_s == pytest.approx(b.iteration_s, rel=1e-6)
    assert a.iterations == b.iterations


def test_steady_state_equals_the_full_simulation_on_random_topologies():
    skipped = 0
    for seed in range(30):
        t, plan, prof, samples = _case(seed)
        full = simulate(t, plan, prof, samples=samples, steady=False)
        fast = simulate(t, plan, prof, samples=samples)
        assert full.steady_periods == 0
        _assert_same(fast, full)
        for node, peak in full.memory_bytes.items():
            assert fast.memory_bytes[node] == pytest.approx(peak, rel=0.01), (seed, node)
        skipped += fast.steady_periods > 0
    assert skipped >= 10, f"only {skipped} of 30 cases found a period"


@pytest.mark.parametrize("mode", ["sl", "fl"])
def test_turns_and_federated_averaging_too(mode):
    """SL (owners take turns: the state repeats within a turn) and FL, 10 random cases each."""
    skipped = 0
    for seed in range(10):
        rng = random.Random(seed)
        K = rng.randint(1, 5)
        cuts = [] if mode == "fl" else [rng.randint(1, LAYERS - 1)]
        t = topo(mode=mode, training={"batch_size": 8, "aggregate_every": rng.choice([None, 3])},
                 plan={"cuts": cuts, "micro_batches": 1},
                 data_owners={"count": K, "uplink_mbps": rng.choice([5, 50]),
                              "downlink_mbps": 50, "latency_ms": 2})
        plan = make_plan(t, LAYERS, cuts)
        samples = [rng.randrange(8, 240) for _ in range(K)]
        prof = _profile(rng)
        fast = simulate(t, plan, prof, samples=samples)
        _assert_same(fast, simulate(t, plan, prof, samples=samples, steady=False))
        skipped += fast.steady_periods > 0
    assert skipped >= 3


def test_one_owner_skips_almost_every_iteration():
    t, plan, prof, _ = _case(1)
    t1 = topo(training={"batch_size": 8}, plan={"cuts": [2], "micro_batches": 4})
    plan = make_plan(t1, LAYERS, [2])
    full = simulate(t1, plan, prof, samples=[8 * 500 + 3], steady=False)
    fast = simulate(t1, plan, prof, samples=[8 * 500 + 3])
    assert fast.steady_periods > 450  # the partial last batch and the drain are simulated
    _assert_same(fast, full)


def test_no_repeat_falls_back_to_every_event(monkeypatch):
    """With checkpoints that never match (and no rounds extrapolated, planner.rate), the
    answer is the full simulation's."""
    t, plan, prof, samples = _case(3)
    monkeypatch.setattr(SteadyState, "_skip", lambda self, eng, old, cp: 0.0)
    monkeypatch.setattr(RateSkip, "_try", lambda self, eng: 0.0)
    fast = simulate(t, plan, prof, samples=samples)
    full = simulate(t, plan, prof, samples=samples, steady=False)
    assert fast.steady_periods == 0
    assert fast.epoch_s == full.epoch_s and fast.busy_s == full.busy_s


def test_give_up_stops_looking():
    t, plan, prof, samples = _case(4)
    state = SteadyState(give_up=0)
    assert not state.active
    full = simulate(t, plan, prof, samples=samples, steady=False)
    rec = simulate(t, plan, prof, samples=samples, record=True)  # recording: every event
    assert rec.steady_periods == 0 and rec.epoch_s == full.epoch_s
