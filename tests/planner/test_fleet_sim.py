"""The fast path of the simulator (planner.steady's exact periods, planner.rate's extrapolated
rounds) against the full event simulation on random small topologies: several owner classes,
gpipe and 1f1b, 1-3 compute nodes, SL, SFL, PiPar and MP-SL. Exact periods give the full
simulation's answer; extrapolated rounds give its epoch within 0.1%."""

from __future__ import annotations

import os
import random
from typing import Any

import pytest

from mpsl.plan import make_plan
from planner.cost import simulate
from planner.profile import Profile
from tests.planner.test_steady import LAYERS, _profile
from tests.planner.util import topo

SLOW = os.environ.get("MPSL_SLOW") == "1"


def _classes(rng: random.Random, K: int) -> list[dict[str, Any]]:
    """Overrides that make up to three owner classes (a slower device, another uplink)."""
    kinds = [{"compute_scale": 2, "uplink_mbps": 7}, {"downlink_mbps": 15, "latency_ms": 4}]
    picked = rng.sample(kinds, rng.randint(0, 2))
    out: list[dict[str, Any]] = []
    for i, values in enumerate(picked):
        for k in range(K - 1 - i, -1, -len(picked) - 1)[:max(1, K // 3)]:
            if k > 0:
                out.append({"index": k, **values})
    return out


def _case(seed: int, K: int, samples: int | None = None,
          modes: tuple[str, ...] = ("sl", "sfl", "pipar", "mpsl", "mpsl")
          ) -> tuple[Any, Any, Profile, list[int]]:
    """A random topology with owner classes, its plan, a random profile and sample counts."""
    rng = random.Random(seed)
    mode = rng.choice(modes)
    chain = rng.randint(1, 3) if mode == "mpsl" else 1
    nodes = [{"name": f"node{i}", "address": f"tcp://127.0.0.1:{5900 + i}",
              "compute_scale": rng.choice([1, 1, 2.5])} for i in range(chain)]
    cuts = sorted(rng.sample(range(1, LAYERS), chain + (1 if mode == "mpsl" else 0)))
    schedule: Any = rng.choice(["gpipe", {"name": "1f1b", "max_in_flight": rng.randint(1, 3)}])
    owners: dict[str, Any] = {
        "count": K, "uplink_mbps": rng.choice([5, 20, 100]),
        "downlink_mbps": rng.choice([10, 50, 200]), "latency_ms": rng.choice([0, 2, 10]),
        "compute_scale": rng.choice([1, 1, 3]), "overrides": _classes(rng, K)}
    single = mode in ("sl", "sfl")
    t = topo(mode=mode, labels="local" if mode == "mpsl" else "shared",
             training={"batch_size": 8,
                       "aggregate_every": None if single else rng.choice([None, None, 5])},
             plan={"cuts": cuts, "micro_batches": 1 if single else rng.randint(1, 6)},
             schedule=schedule, data_owners=owners, compute_nodes=nodes,
             links={"compute_mbps": rng.choice([50, 1000]), "compute_latency_ms": 1})
    counts = [rng.randrange(8, 160) for _ in range(K)] if samples is None else [samples] * K
    return t, make_plan(t, LAYERS, cuts), _profile(rng), counts


def test_exact_periods_equal_the_full_simulation_with_owner_classes():
    """Exact periods only (no round extrapolated at this size): the full simulation's epoch,
    busy times and iteration time."""
    found = 0
    for seed in range(24):
        t, plan, prof, samples = _case(seed, random.Random(seed).randint(2, 7))
        full = simulate(t, plan, prof, samples=samples, steady=False)
        fast = simulate(t, plan, prof, samples=samples)
        assert fast.epoch_s == pytest.approx(full.epoch_s, rel=1e-9), seed
        assert fast.iteration_s == pytest.approx(full.iteration_s, rel=1e-6), seed
        for name, v in full.busy_s.items():
            assert fast.busy_s[name] == pytest.approx(v, rel=1e-6, abs=1e-9), (seed, name)
        found += fast.steady_periods > 0
    assert found >= 6, f"only {found} of 24 cases found a period"


def _check_rate(seeds: list[int], K: int, samples: int) -> int:
    """Fast against full on non-SL fleets of K owners; the cases that extrapolated rounds."""
    extrapolated = 0
    for seed in seeds:
        t, plan, prof, counts = _case(seed, K, samples, modes=("sfl", "pipar", "mpsl"))
        full = simulate(t, plan, prof, samples=counts, steady=False)
        fast = simulate(t, plan, prof, samples=counts)
        assert fast.epoch_s == pytest.approx(full.epoch_s, rel=1e-3), seed
        top = max(full.busy_s, key=full.busy_s.__getitem__)
        assert fast.busy_s[top] == pytest.approx(full.busy_s[top], rel=1e-3), seed
        assert fast.iteration_s == pytest.approx(full.iteration_s, rel=1e-2), seed
        extrapolated += fast.steady_periods > 0 and fast.epoch_s != full.epoch_s
    return extrapolated


def test_extrapolated_rounds_keep_the_epoch_within_0_1_percent():
    """A fleet of 64 owners in three classes over a chain of compute nodes whose schedule
    never repeats: rounds are extrapolated (planner.rate), the epoch and the bottleneck's
    busy time within 0.1% of the full simulation."""
    assert _check_rate([407], 64, 320) == 1


@pytest.mark.skipif(not SLOW, reason="slow (~1 min): 24 random fleets; MPSL_SLOW=1")
def test_extrapolated_rounds_on_random_fleets():
    assert _check_rate(list(range(400, 424)), 64, 320) >= 1
