"""Measuring a profile: sizes, what is measured, the sleeps before the cold passes, rounds."""

from __future__ import annotations

import pytest

import planner.measure as measure_module
from planner.measure import measure_profile, profile_sizes
from planner.profile import Profile


def test_profile_sizes_bracket_every_micro_batch():
    assert profile_sizes(32) == [1, 2, 4, 8, 16, 32]
    assert profile_sizes(50) == [1, 2, 4, 8, 16, 32, 50]
    assert profile_sizes(1) == [1] and profile_sizes(3) == [1, 2, 3]



def test_measure_tiny_model(tmp_path):
    import torch

    threads = torch.get_num_threads()
    p = measure_profile("mlp", (1, 8, 8), 10, "none", batch_sizes=(1, 4), repeats=1)
    assert torch.get_num_threads() == threads  # restored
    assert p.names == ["fc-64", "fc-64", "fc-32", "fc-10"]
    assert [lp.out_bytes for lp in p.layers] == [256, 256, 128, 40]
    assert [lp.param_bytes for lp in p.layers] == [(64 * 64 + 64) * 4, (64 * 64 + 64) * 4,
                                                   (64 * 32 + 32) * 4, (32 * 10 + 10) * 4]
    assert p.wake_fwd_s >= 0 and p.wake_bwd_s >= 0
    assert p.step_s >= 0 and p.wake_step_s >= 0
    for lp in p.layers:
        assert lp.act_bytes > 0 and lp.opt_s > 0 and len(lp.points) == 2
        assert lp.fwd(4) > 0 and lp.bwd(4) > 0
    p.to_csv(tmp_path / "m.csv")
    q = Profile.from_csv(tmp_path / "m.csv")
    assert [lp.points for lp in q.layers] == [lp.points for lp in p.layers]


def test_measure_batch_norm_on_1x1_maps():
    """A micro-batch of 1 cannot train BatchNorm on 1x1 maps: measured from 2 samples up."""
    p = measure_profile("mobilenetv3_small", (3, 32, 32), 10, "batch", batch_sizes=(1, 4),
                        repeats=1, wake_repeats=1)
    assert p.meta["smallest_batch"] == 2
    assert {b for lp in p.layers for b, _, _ in lp.points} == {2, 4}


def test_wake_up_cost_is_measured_after_the_given_gap(monkeypatch):
    """Every pass and step timed for the wake-up cost follows `wake_gap_s` of sleep: 3 per
    layer with parameters (forward, backward, step), per repeat and batch size, and no other
    sleep."""
    slept: list[float] = []
    monkeypatch.setattr(measure_module.time, "sleep", slept.append)
    p = measure_profile("mlp", (1, 8, 8), 10, "none", batch_sizes=(1, 4), repeats=1,
                        wake_repeats=2, wake_gap_s=0.123)
    assert slept == [0.123] * (3 * len(p.layers) * 2 * 2)


def test_step_costs_are_the_in_context_step_less_the_warm_one(monkeypatch):
    """step_s: a node's step (right after a backward) less the layer's warm opt_s; wake_step_s:
    the step after a sleep less the one without. Steps here take 1 ms, 3 ms after a sleep, and
    opt_s is 0.4 ms."""
    state = {"slept": False, "steps": 0}

    def sleep(s: float) -> None:
        state["slept"] = True

    def step(opt, now=None):
        if opt is None:
            return None
        state["steps"] += 1
        t, state["slept"] = (0.003 if state["slept"] else 0.001), False
        return t

    monkeypatch.setattr(measure_module.time, "sleep", sleep)
    monkeypatch.setattr(measure_module, "_step", step)
    monkeypatch.setattr(measure_module, "_opt_times", lambda mods, *a: [0.0004] * len(mods))
    p = measure_profile("mlp", (1, 8, 8), 10, "none", batch_sizes=(1, 4), repeats=2,
                        wake_repeats=1)
    assert p.step_s == pytest.approx(0.0006) and p.wake_step_s == pytest.approx(0.002)
    assert [lp.opt_s for lp in p.layers] == [0.0004] * 4
    # every layer steps after every warm pass (3 rounds x 2 sizes) and every cold one (2 sizes)
    assert state["steps"] == 4 * (3 * 2 + 2)


def test_repeats_are_rounds_over_every_batch_size(monkeypatch):
    """A round times every batch size once, so each (layer, batch) median draws on passes
    spread over the whole measurement; the wake-up passes run inside rounds spread among
    the warm ones, not in one block."""
    order: list[tuple[str, int]] = []
    warm, cold = measure_module._warm_times, measure_module._cold_times

    def log_warm(mods, opts, x0, *rest):
        order.append(("warm", x0.shape[0]))
        return warm(mods, opts, x0, *rest)

    def log_cold(mods, opts, x0, *rest):
        order.append(("cold", x0.shape[0]))
        return cold(mods, opts, x0, *rest)

    monkeypatch.setattr(measure_module.time, "sleep", lambda s: None)
    monkeypatch.setattr(measure_module, "_warm_times", log_warm)
    monkeypatch.setattr(measure_module, "_cold_times", log_cold)
    measure_profile("mlp", (1, 8, 8), 10, "none", batch_sizes=(1, 4), repeats=4,
                    wake_repeats=2)
    plain = [("warm", 1), ("warm", 4)]
    with_cold = [("warm", 1), ("cold", 1), ("warm", 4), ("cold", 4)]
    # round 0 warms up; the wake-up passes follow rounds 1 and 3 of 1..4
    assert order == plain + with_cold + plain + with_cold + plain


@pytest.mark.parametrize("model,norm,batch", [("mlp", "none", 4), ("vgg5", "batch", 8),
                                              ("mlp", "none", 1)])
def test_byte_profile_has_a_measured_profiles_bytes(monkeypatch, model, norm, batch):
    """byte_profile's out, parameter and saved bytes are those measure_profile finds at the
    topology's batch size, from two untimed forwards; every time is zero."""
    from mpsl.topology import parse
    from planner.measure import byte_profile

    monkeypatch.setattr(measure_module.time, "sleep", lambda s: None)
    t = parse({"model": {"name": model, "norm": norm},
               "dataset": {"name": "synthetic", "options": {"shape": [3, 16, 16], "size": 8}},
               "training": {"batch_size": batch}, "mode": "fl", "data_owners": {"count": 1}},
              "t.yaml")
    got = byte_profile(t)
    want = measure_profile(model, (3, 16, 16), 10, norm, batch_sizes=profile_sizes(batch),
                           repeats=1, wake_repeats=1)
    assert got.names == want.names
    for g, w in zip(got.layers, want.layers):
        assert (g.out_bytes, g.param_bytes, g.act_bytes) == (w.out_bytes, w.param_bytes,
                                                              w.act_bytes), g.name
        assert g.fwd(4) == g.bwd(4) == g.opt_s == 0 and not g.points
    assert got.step([(0, got.num_layers)]) == 0 and got.wake_fwd_s == 0
    assert sum(lp.act_bytes for lp in got.layers) > 0


def test_the_cpu_clock_is_perf_counter_and_other_devices_are_checked():
    import time

    import torch

    assert measure_module.device_clock("cpu") is time.perf_counter
    with pytest.raises(ValueError, match="cannot profile on device 'tpu': cpu, cuda or cuda:N"):
        measure_module.device_clock("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cannot profile on cuda:1: torch sees no CUDA"):
            measure_module.device_clock("cuda:1")


def test_every_pass_and_step_is_timed_by_the_devices_clock(monkeypatch):
    """On a GPU the timers must wait for the device: every time read goes through the
    device's clock. A fake clock that advances 1 s per read gives 1 s per pass and step."""
    ticks = iter(range(1_000_000))
    monkeypatch.setattr(measure_module, "device_clock",
                        lambda device: (lambda: float(next(ticks))))
    p = measure_profile("mlp", (1, 8, 8), 10, "none", batch_sizes=(1, 4), repeats=1,
                        wake_repeats=1, wake_gap_s=0.0)
    for lp in p.layers:
        assert lp.points == ((1, 1.0, 1.0), (4, 1.0, 1.0))
        assert lp.opt_s == 1.0
