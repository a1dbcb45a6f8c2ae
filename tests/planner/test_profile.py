"""Profiles: the line fit, CSV round trips, one-line errors, a real measurement."""

from __future__ import annotations

import pytest

from planner.profile import (
    COLUMNS,
    WAKE_COLUMNS,
    LayerProfile,
    Profile,
    ProfileError,
    fit_line,
    measure_profile,
    profile_sizes,
)

HEADER = ",".join(COLUMNS)
FULL_HEADER = ",".join(COLUMNS + WAKE_COLUMNS)


def test_fit_line():
    assert fit_line([(1, 3.0), (3, 7.0)]) == pytest.approx((1.0, 2.0))
    assert fit_line([(4, 2.0)]) == (0.0, 0.5)  # one batch size: proportional
    assert fit_line([(1, 2.0), (2, 1.0)]) == (1.5, 0.0)  # falling: a constant
    a, c = fit_line([(1, 0.0), (2, 1.0), (3, 2.0)])  # negative intercept: through 0
    assert a == 0 and c > 0


def test_sums_and_scaling():
    p = Profile((LayerProfile("a", 1, 2, 3, 4, 0.5, 10, 100, 7),
                 LayerProfile("b", 0, 1, 0, 1, 0.25, 20, 200, 9)))
    assert p.fwd((0, 2), 2) == 1 + 2 * 2 + 2
    assert p.bwd(range(1, 2), 3) == 3
    assert p.fit((0, 2)) == (1, 3, 3, 5)
    assert p.opt((0, 2)) == 0.75 and p.param_bytes((0, 2)) == 300 and p.act_bytes(0) == 7
    s = p.scaled(2)
    assert s.fwd((0, 2), 2) == 2 * p.fwd((0, 2), 2) and s.opt(1) == 0.5
    assert s.out_bytes(1) == 20 and p.scaled(1) is p
    w = Profile(p.layers, wake_fwd_s=0.25, wake_bwd_s=0.5).scaled(4)
    assert (w.wake_fwd_s, w.wake_bwd_s) == (1.0, 2.0)


def test_times_interpolate_between_measured_batch_sizes():
    """Piecewise linear through the points, the end segments extended, never below 0; the
    least-squares line stays the summary."""
    lp = LayerProfile("conv", *fit_line([(1, 1.0), (4, 4.0), (8, 5.0)]),
                      *fit_line([(1, 2.0), (4, 2.0), (8, 10.0)]),
                      points=((8, 5.0, 10.0), (1, 1.0, 2.0), (4, 4.0, 2.0)))  # any order
    assert [b for b, _, _ in lp.points] == [1, 4, 8]
    assert [lp.fwd(b) for b in (1, 2, 4, 6, 8)] == pytest.approx([1, 2, 4, 4.5, 5])
    assert lp.fwd(16) == pytest.approx(7) and lp.fwd(0.5) == pytest.approx(0.5)
    assert [lp.bwd(b) for b in (2, 4, 6, 12)] == pytest.approx([2, 2, 6, 18])
    assert lp.fwd(4) != pytest.approx(lp.fwd_a + lp.fwd_c * 4)  # the points, not the line
    falling = LayerProfile("x", 0, 0, 0, 0, points=((1, 3.0, 3.0), (2, 1.0, 1.0)))
    assert falling.fwd(4) == 0.0  # extended below zero: none
    p = Profile((lp, lp)).scaled(2)
    assert p.fwd((0, 2), 6) == pytest.approx(2 * 2 * 4.5)


def test_profile_sizes_bracket_every_micro_batch():
    assert profile_sizes(32) == [1, 2, 4, 8, 16, 32]
    assert profile_sizes(50) == [1, 2, 4, 8, 16, 32, 50]
    assert profile_sizes(1) == [1] and profile_sizes(3) == [1, 2, 3]


def test_csv_round_trip(tmp_path):
    p = Profile.synthetic(5, fwd=(0.001, 0.002), bwd=(0.0005, 0.004), out_bytes=[1, 2, 3, 4, 5])
    p = Profile(p.layers, p.source, wake_fwd_s=0.0007, wake_bwd_s=0.0009)
    path = tmp_path / "p.csv"
    p.to_csv(path)
    lines = path.read_text().splitlines()
    assert lines[0] == FULL_HEADER and len(lines) == 1 + 5 * 2
    q = Profile.from_csv(path)
    assert q.num_layers == 5 and q.names == p.names
    assert (q.wake_fwd_s, q.wake_bwd_s) == (0.0007, 0.0009)
    for a, b in zip(p.layers, q.layers):
        assert (b.fwd_a, b.fwd_c, b.bwd_a, b.bwd_c) == pytest.approx(
            (a.fwd_a, a.fwd_c, a.bwd_a, a.bwd_c))
        assert (b.opt_s, b.out_bytes, b.param_bytes, b.act_bytes) == (
            a.opt_s, a.out_bytes, a.param_bytes, a.act_bytes)
    q.to_csv(tmp_path / "q.csv")  # measured points written back as read
    assert (tmp_path / "q.csv").read_text() == path.read_text()


def test_single_batch_size_is_proportional(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text(f"{HEADER}\n0,conv,8,0.8,1.6,0.1,100,10,50\n1,fc,8,0.4,0.4,0.1,40,10,5\n")
    p = Profile.from_csv(path)
    assert p.fwd(0, 4) == pytest.approx(0.4) and p.bwd(0, 1) == pytest.approx(0.2)
    assert p.layers[0].fwd_a == 0
    assert (p.wake_fwd_s, p.wake_bwd_s) == (0, 0)  # the optional columns left out: no wake-up



@pytest.mark.parametrize("body,where", [
    ("layer,name,batch\n", "line 1: missing column 'fwd_s'"),
    (HEADER + ",extra\n", "line 1: unknown column 'extra'"),
    (HEADER + "\n0,a,1,0.1,0.2,0.1,1,1,1\n0,a,2,fast,0.2,0.1,1,1,1\n",
     "line 3, column 'fwd_s': got 'fast', expected a number of seconds"),
    (HEADER + "\n0,a,0,0.1,0.2,0.1,1,1,1\n", "line 2, column 'batch': got '0'"),
    (HEADER + "\n0,a,1,-0.1,0.2,0.1,1,1,1\n", "line 2, column 'fwd_s': got '-0.1'"),
    (HEADER + "\n0,a,1,0.1,0.2,0.1,1,1,1\n2,c,1,0.1,0.2,0.1,1,1,1\n",
     "line 3, column 'layer': layer 1 is missing"),
    (HEADER + "\n0,a,1,0.1,0.2,0.1,1,1,1\n0,b,2,0.1,0.2,0.1,1,1,1\n",
     "line 3, column 'name': got 'b', expected 'a' as on line 2"),
    (HEADER + "\n0,a,1,0.1,0.2,0.1,1,1,1\n0,a,1,0.1,0.2,0.1,1,1,1\n",
     "line 3, column 'batch': batch 1 of layer 0 already on line 2"),
    (HEADER + "\n0,a,1,0.1\n", "line 2: 4 fields, expected 9"),
    (HEADER + "\n0,a,1,0.1,0.2,0.1,1.5,1,1\n", "line 2, column 'out_bytes': got '1.5'"),
    (HEADER + "\n", "line 2: no rows"),
    (FULL_HEADER + "\n0,a,1,0.1,0.2,0.1,1,1,1\n", "line 2: 9 fields, expected 11"),
    (FULL_HEADER + "\n0,a,1,0.1,0.2,0.1,1,1,1,0.001,0.002\n1,b,1,0.1,0.2,0.1,1,1,1,0.001,0.003\n",
     "line 3, column 'wake_bwd_s': got 0.003, expected 0.002 as on line 2"),
    (FULL_HEADER + "\n0,a,1,0.1,0.2,0.1,1,1,1,-1,0.002\n", "line 2, column 'wake_fwd_s'"),
    (HEADER + ",wake_fwd_s\n", "line 1: columns out of order"),
    ("", "line 1: empty file"),
])
def test_bad_csv_one_line_error(tmp_path, body, where):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(ProfileError) as err:
        Profile.from_csv(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and where in msg and "\n" not in msg


def test_missing_file(tmp_path):
    with pytest.raises(ProfileError, match="cannot read the profile"):
        Profile.from_csv(tmp_path / "nope.csv")


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
    """Every pass timed for the wake-up cost follows `wake_gap_s` of sleep: 2 per layer
    (forward, backward), per repeat and batch size, and no other sleep."""
    import planner.profile as profile_module

    slept: list[float] = []
    monkeypatch.setattr(profile_module.time, "sleep", slept.append)
    p = measure_profile("mlp", (1, 8, 8), 10, "none", batch_sizes=(1, 4), repeats=1,
                        wake_repeats=2, wake_gap_s=0.123)
    assert slept == [0.123] * (2 * len(p.layers) * 2 * 2)


def test_repeats_are_rounds_over_every_batch_size(monkeypatch):
    """A round times every batch size once, so each (layer, batch) median draws on passes
    spread over the whole measurement; the wake-up passes run inside rounds spread among
    the warm ones, not in one block."""
    import planner.profile as profile_module

    order: list[tuple[str, int]] = []
    warm, cold = profile_module._warm_times, profile_module._cold_times

    def log_warm(mods, x0, *rest):
        order.append(("warm", x0.shape[0]))
        return warm(mods, x0, *rest)

    def log_cold(mods, x0, *rest):
        order.append(("cold", x0.shape[0]))
        return cold(mods, x0, *rest)

    monkeypatch.setattr(profile_module.time, "sleep", lambda s: None)
    monkeypatch.setattr(profile_module, "_warm_times", log_warm)
    monkeypatch.setattr(profile_module, "_cold_times", log_cold)
    measure_profile("mlp", (1, 8, 8), 10, "none", batch_sizes=(1, 4), repeats=4,
                    wake_repeats=2)
    plain = [("warm", 1), ("warm", 4)]
    with_cold = [("warm", 1), ("cold", 1), ("warm", 4), ("cold", 4)]
    # round 0 warms up; the wake-up passes follow rounds 1 and 3 of 1..4
    assert order == plain + with_cold + plain + with_cold + plain
