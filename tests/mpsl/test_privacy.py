"""mpsl.privacy: the clipped, noised update, the noise layer, the seeds, the accountant against
closed forms and a published example, and the topology's `privacy` section."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from mpsl.plan import make_plan
from mpsl.privacy import (
    NoiseLayer,
    derive_seed,
    epsilon,
    generator,
    node_seed,
    privatize,
    record,
    spent,
    update_norm,
)
from mpsl.settings import first_difference, run_settings
from mpsl.topology import PrivacySpec, TopologyError, parse
from tests.mpsl.test_security_spec import BASE

ORDERS = [1.25, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256]


def states(seed: int = 0, scale: float = 1.0) -> tuple[dict[str, torch.Tensor], ...]:
    g = torch.Generator().manual_seed(seed)
    ref = {"0.weight": torch.randn(30, 20, generator=g), "0.bias": torch.randn(30, generator=g)}
    state = {k: v + scale * torch.randn(v.shape, generator=g) for k, v in ref.items()}
    state["1.running_mean"] = torch.randn(30, generator=g)  # a buffer: not in the reference
    return state, ref


# ------------------------------------------------------------------------ the update


def test_the_clip_bounds_the_update_norm_and_keeps_its_direction() -> None:
    state, ref = states(scale=1.0)
    before = update_norm(state, ref)
    assert before > 5  # about sqrt(630)
    out, norm = privatize(state, ref, clip_norm=2.0, noise_multiplier=0.0, gen=generator(1))
    assert norm == pytest.approx(before)
    assert update_norm(out, ref) == pytest.approx(2.0, rel=1e-6)
    for k in ref:  # the same direction, scaled by C / norm
        torch.testing.assert_close(out[k] - ref[k], (state[k] - ref[k]) * (2.0 / before))
    assert out["1.running_mean"] is state["1.running_mean"]  # buffers pass as they are


def test_an_update_within_the_norm_without_noise_is_unchanged_to_the_bit() -> None:
    state, ref = states(scale=0.01)
    out, norm = privatize(state, ref, clip_norm=10.0, noise_multiplier=0.0, gen=generator(1))
    assert norm < 10
    assert all(out[k] is state[k] for k in state)


def test_the_noise_has_std_sigma_times_c_and_is_reproducible() -> None:
    # a zero update, so what is uploaded is the noise alone: n = 400,000 draws of std 3.
    # The sample std's relative standard error is 1 / sqrt(2n) = 0.11%, and the mean's
    # standard error 3 / sqrt(n) = 0.0047: 5 standard errors are 0.6% and 0.024.
    n = 400_000
    ref = {"w": torch.zeros(n // 4, 4)}
    state = {"w": ref["w"].clone()}
    out, _ = privatize(state, ref, clip_norm=2.0, noise_multiplier=1.5, gen=generator(7, 0, 3))
    noise = out["w"].double()
    assert noise.std().item() == pytest.approx(3.0, rel=5 / math.sqrt(2 * n))
    assert abs(noise.mean().item()) < 5 * 3.0 / math.sqrt(n)
    again, _ = privatize(state, ref, 2.0, 1.5, generator(7, 0, 3))
    other, _ = privatize(state, ref, 2.0, 1.5, generator(7, 0, 4))  # the next round
    assert torch.equal(again["w"], out["w"]) and not torch.equal(other["w"], out["w"])


def test_clip_then_noise() -> None:
    state, ref = states(scale=1.0)
    out, _ = privatize(state, ref, clip_norm=1.0, noise_multiplier=0.5, gen=generator(3))
    clipped, _ = privatize(state, ref, clip_norm=1.0, noise_multiplier=0.0, gen=generator(3))
    g = generator(3)
    for k in ref:  # the noise is drawn in the reference's order
        expected = clipped[k] - ref[k] + 0.5 * torch.randn(ref[k].shape, generator=g)
        torch.testing.assert_close(out[k] - ref[k], expected)


# ------------------------------------------------------------------------ seeds and the layer


def test_seeds_are_stable_and_distinct() -> None:
    assert derive_seed(1, 2, 3) == derive_seed(1, 2, 3)
    assert len({derive_seed(0, 0, r) for r in range(1000)}) == 1000
    assert derive_seed(-1) != derive_seed(1) and 0 <= derive_seed(-5, 9) < 2**63
    assert node_seed(PrivacySpec(noise_seed=42)) == 42
    assert node_seed(PrivacySpec()) != node_seed(PrivacySpec())  # secret: drawn each time


def test_the_noise_layer_noises_input_and_cut_with_their_sigmas() -> None:
    assert NoiseLayer.of(PrivacySpec(), 0) is None
    assert NoiseLayer.of(PrivacySpec(clip_norm=1.0, noise_multiplier=1.0), 0) is None
    layer = NoiseLayer.of(PrivacySpec(pixel_sigma=0.5, cut_sigma=2.0), 11)
    assert layer is not None
    x = torch.zeros(200, 1000)  # n = 200,000: 5 relative standard errors are 0.8%
    tol = 5 / math.sqrt(2 * x.numel())
    assert layer.on_input(x, 0, 3, 1).std().item() == pytest.approx(0.5, rel=tol)
    assert layer.on_cut(x, 0, 1, 3, 1).std().item() == pytest.approx(2.0, rel=tol)
    assert torch.equal(layer.on_input(x, 0, 3, 1), layer.on_input(x, 0, 3, 1))
    assert not torch.equal(layer.on_input(x, 0, 3, 1), layer.on_input(x, 0, 3, 2))
    assert not torch.equal(layer.on_input(x, 0, 3, 1), layer.on_input(x, 1, 3, 1))
    labels = torch.arange(5)
    assert layer.on_input(labels, 0, 0, 0) is labels  # only floating tensors are noised
    only_pixel = NoiseLayer(0.5, 0.0, 11)
    assert only_pixel.on_cut(x, 0, 1, 3, 1) is x


# ------------------------------------------------------------------------ the accountant


def rdp_to_epsilon(rdp: float, alpha: float, delta: float) -> float:
    """(epsilon, delta) from RDP at one order: Canonne, Kamath, Steinke 2020, Prop. 12."""
    return rdp + math.log1p(-1 / alpha) - math.log(delta * alpha) / (alpha - 1)


@pytest.mark.parametrize(("sigma", "steps", "delta"), [
    (1.0, 1, 1e-5), (1.1, 10, 1e-5), (4.0, 100, 1e-6), (0.5, 3, 1e-3)])
def test_the_gaussian_mechanism_composed_matches_its_closed_form(
        sigma: float, steps: int, delta: float) -> None:
    # q = 1: RDP of the Gaussian mechanism is alpha / (2 sigma^2) per release, T releases add
    want = min(max(0.0, rdp_to_epsilon(steps * a / (2 * sigma**2), a, delta)) for a in ORDERS)
    assert epsilon(sigma, steps, delta, orders=ORDERS) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize(("sigma", "steps"), [(1.0, 1), (2.0, 20), (8.0, 500)])
def test_the_epsilon_is_a_valid_bound_for_the_exact_gaussian(sigma: float, steps: int) -> None:
    # T Gaussian releases of sensitivity 1 and std sigma are one of std sigma / sqrt(T); its
    # exact delta at epsilon (Balle and Wang 2018, Thm. 8) must not exceed the target delta
    delta = 1e-5
    eps = epsilon(sigma, steps, delta)
    s = sigma / math.sqrt(steps)

    def phi(t: float) -> float:
        return 0.5 * math.erfc(-t / math.sqrt(2))

    exact = phi(-eps * s + 1 / (2 * s)) - math.exp(eps) * phi(-eps * s - 1 / (2 * s))
    assert exact <= delta * (1 + 1e-9)
    assert exact > delta / 10  # and not far off: RDP loses little for the Gaussian


def test_the_subsampled_case_matches_opacus_documented_example() -> None:
    # Opacus' compute_dp_sgd_privacy: N = 60000, B = 256, sigma = 1.12, 60 epochs, delta = 1e-5
    # at orders 10, 20, 100 "satisfies (epsilon, delta)-DP of (2.95, 1e-5)"; Opacus converts
    # with epsilon = rdp - log(delta) / (alpha - 1), dp-accounting with the tighter bound
    # above, so undo the difference order by order.
    q, steps, delta = 256 / 60000, 60 * math.ceil(60000 / 256), 1e-5
    classic = []
    for a in (10, 20, 100):
        eps = epsilon(1.12, steps, delta, sampling_rate=q, orders=[a])
        classic.append(eps - math.log1p(-1 / a) + math.log(a) / (a - 1))
    assert round(min(classic), 2) == 2.95
    tighter = epsilon(1.12, steps, delta, sampling_rate=q)
    assert 2.0 < tighter < 2.95


def test_spent_and_the_record() -> None:
    spec = PrivacySpec(clip_norm=1.0, noise_multiplier=2.0, delta=1e-6, cut_sigma=0.1)
    assert spent(spec, 0) == 0.0
    assert spent(spec, 5) == epsilon(2.0, 5, 1e-6)
    assert spent(spec, 5, replace_one=True) == epsilon(1.0, 5, 1e-6)  # sensitivity 2C
    assert spent(spec, 5) < spent(spec, 6)
    assert spent(PrivacySpec(clip_norm=1.0), 5) is None  # clipping alone: no guarantee
    assert spent(PrivacySpec(noise_multiplier=2.0), 5) is None  # no clip: not applied
    rec = record(spec, 5)
    assert rec["epsilon"] == spent(spec, 5) and rec["steps"] == 5
    assert rec["sampling_rate"] == 1.0 and rec["delta"] == 1e-6 and rec["clip_norm"] == 1.0
    assert rec["noise_multiplier"] == 2.0 and rec["cut_sigma"] == 0.1
    assert rec["accountant"].startswith("rdp (dp-accounting ") and rec["noise"] == "secret"


# ------------------------------------------------------------------------ the topology


def test_privacy_is_off_by_default_and_parsed_when_given() -> None:
    assert parse(BASE, "t.yaml").privacy == PrivacySpec()
    assert not PrivacySpec().updates and not PrivacySpec().layer
    doc = {**BASE, "privacy": {"clip_norm": 1, "noise_multiplier": 1.1, "delta": 1e-6,
                               "pixel_sigma": 0.1, "cut_sigma": 0.2, "noise_seed": 3}}
    spec = parse(doc, "t.yaml").privacy
    assert spec == PrivacySpec(1.0, 1.1, 1e-6, 0.1, 0.2, 3) and spec.updates and spec.layer


@pytest.mark.parametrize(("privacy", "field", "fragment"), [
    ({"noise_multiplier": 1.0}, "privacy.clip_norm", "missing, expected a clip norm"),
    ({"clip_norm": 0}, "privacy.clip_norm", "got 0, expected a positive number"),
    ({"clip_norm": float("inf")}, "privacy.clip_norm", "expected a finite number"),
    ({"clip_norm": 1, "noise_multiplier": -1}, "privacy.noise_multiplier", "a number >= 0"),
    ({"delta": 1}, "privacy.delta", "got 1.0, expected a number in (0, 1)"),
    ({"delta": 0}, "privacy.delta", "expected a positive number"),
    ({"pixel_sigma": "big"}, "privacy.pixel_sigma", "got 'big', expected a number >= 0"),
    ({"cut_sigma": float("inf")}, "privacy.cut_sigma", "expected a finite number"),
    ({"noise_seed": 1.5}, "privacy.noise_seed", "expected an integer >= 0"),
    ({"epsilon": 1}, "privacy.epsilon", "no such field (known: clip_norm, cut_sigma"),
    ("on", "privacy", "expected a mapping"),
])
def test_errors_are_one_line_naming_the_field(privacy: Any, field: str, fragment: str) -> None:
    with pytest.raises(TopologyError) as err:
        parse({**BASE, "privacy": privacy}, "t.yaml")
    assert err.value.field == field
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"t.yaml: field '{field}': ") and fragment in text


def test_privacy_is_a_run_wide_setting() -> None:
    plain = parse(BASE, "t.yaml")
    dp = parse({**BASE, "privacy": {"clip_norm": 1.0, "noise_multiplier": 1.0}}, "t.yaml")
    plan = make_plan(plain, 4)
    mine, theirs = run_settings(plain, plan), run_settings(dp, plan)
    assert {"privacy.clip_norm", "privacy.noise_multiplier", "privacy.delta",
            "privacy.pixel_sigma", "privacy.cut_sigma", "privacy.noise_seed"} <= set(mine)
    assert first_difference(mine, theirs) == "privacy.clip_norm is 1.0 there, None here"
