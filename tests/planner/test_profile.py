"""Profiles: the line fit, interpolation, STEP time, CSV round trips, one-line errors."""

from __future__ import annotations

import pytest

from planner.profile import (
    COLUMNS,
    PROFILE_COLUMNS,
    WAKE_COLUMNS,
    LayerProfile,
    Profile,
    ProfileError,
    fit_line,
)

HEADER = ",".join(COLUMNS)
WAKE_HEADER = ",".join(COLUMNS + WAKE_COLUMNS)  # files written before step_s
FULL_HEADER = ",".join(COLUMNS + PROFILE_COLUMNS)


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
    w = Profile(p.layers, wake_fwd_s=0.25, wake_bwd_s=0.5, step_s=0.125,
                wake_step_s=0.0625).scaled(4)
    assert w.profile_values == (1.0, 2.0, 0.5, 0.25)


def test_step_is_the_layers_opt_plus_a_cost_per_part():
    """A STEP action: every layer's opt_s, step_s once per part (each part has its own
    optimizer), wake_step_s once when the processor slept before it."""
    layers = tuple(LayerProfile(f"l{i}", 0, 0, 0, 0, opt) for i, opt in
                   enumerate((0.25, 0.5, 1.0, 2.0)))
    p = Profile(layers, step_s=8.0, wake_step_s=16.0)
    assert p.step([(0, 2)]) == 0.75 + 8
    assert p.step([(0, 1), (3, 4)]) == 0.25 + 2 + 2 * 8
    assert p.step([(0, 1), (3, 4)], slept=True) == 0.25 + 2 + 2 * 8 + 16
    assert p.step([], slept=True) == 0.0
    assert Profile(layers).step([(0, 4)], slept=True) == 3.75  # profiles without the columns


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


def test_csv_round_trip(tmp_path):
    p = Profile.synthetic(5, fwd=(0.001, 0.002), bwd=(0.0005, 0.004), out_bytes=[1, 2, 3, 4, 5])
    p = Profile(p.layers, p.source, wake_fwd_s=0.0007, wake_bwd_s=0.0009, step_s=0.0002,
                wake_step_s=0.0001)
    path = tmp_path / "p.csv"
    p.to_csv(path)
    lines = path.read_text().splitlines()
    assert lines[0] == FULL_HEADER and len(lines) == 1 + 5 * 2
    q = Profile.from_csv(path)
    assert q.num_layers == 5 and q.names == p.names
    assert q.profile_values == (0.0007, 0.0009, 0.0002, 0.0001)
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
    assert p.profile_values == (0, 0, 0, 0)  # the optional columns left out: none


def test_files_without_the_step_columns_are_read(tmp_path):
    """A profile written before step_s and wake_step_s existed: those are 0."""
    path = tmp_path / "wake.csv"
    path.write_text(f"{WAKE_HEADER}\n0,conv,8,0.8,1.6,0.1,100,10,50,0.001,0.002\n")
    p = Profile.from_csv(path)
    assert p.profile_values == (0.001, 0.002, 0, 0)



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
    (WAKE_HEADER + "\n0,a,1,0.1,0.2,0.1,1,1,1\n", "line 2: 9 fields, expected 11"),
    (WAKE_HEADER + "\n0,a,1,0.1,0.2,0.1,1,1,1,0.001,0.002\n1,b,1,0.1,0.2,0.1,1,1,1,0.001,0.003\n",
     "line 3, column 'wake_bwd_s': got 0.003, expected 0.002 as on line 2"),
    (WAKE_HEADER + "\n0,a,1,0.1,0.2,0.1,1,1,1,-1,0.002\n", "line 2, column 'wake_fwd_s'"),
    (FULL_HEADER + "\n0,a,1,0.1,0.2,0.1,1,1,1,0,0,0.001\n", "line 2: 12 fields, expected 13"),
    (FULL_HEADER + "\n0,a,1,0.1,0.2,0.1,1,1,1,0,0,1e-4,2e-4\n"
     "1,b,1,0.1,0.2,0.1,1,1,1,0,0,1e-4,3e-4\n",
     "line 3, column 'wake_step_s': got 0.0003, expected 0.0002 as on line 2"),
    (FULL_HEADER + "\n0,a,1,0.1,0.2,0.1,1,1,1,0,0,-1,0\n", "line 2, column 'step_s': got '-1'"),
    (HEADER + ",wake_fwd_s\n", "line 1: columns out of order"),
    (HEADER + ",step_s,wake_step_s\n", "line 1: columns out of order"),
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
