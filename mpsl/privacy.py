"""Differential privacy: the data owners' clipped and noised updates (classic DP), the noise
layer on the first layer's input and at the cuts, and the accountant of the classic DP.

What the accountant accounts (`epsilon`, `record`): user-level DP of one data owner's whole
data set, against whoever sees what the owner uploads for aggregation (the aggregator, a
listener on the link) and everything computed from it (the global owner-side model). In each
aggregation an owner releases one update, clip(delta, C) + N(0, (sigma * C)^2 I), delta being
its parts' parameter change since the last global model it received: one Gaussian mechanism
of noise multiplier sigma under add/remove adjacency (the owner's data against none: an owner
without data uploads a zero delta, so the L2 sensitivity is C), as in DP-FedAvg (McMahan et
al., ICLR 2018). Every owner takes part in every round with all its data, so nothing is
subsampled (q = 1): T rounds compose to Renyi DP T * alpha / (2 sigma^2) at order alpha,
turned into (epsilon, delta) by dp-accounting's RDP accountant. `epsilon_replace_one` is the
guarantee under replacement (the owner's data against any other data: sensitivity 2C, so
multiplier sigma / 2). T counts round ids: a round redone after a rollback draws the same
noise (its seed is a function of the round), and so releases nothing new when it trains to
the same delta, which the rollback guarantees (nodes.recovery restores the RNG).

Not accounted: the compute nodes see the activations at the cuts (and the labels, when they
are shared) every iteration; the noise layer (`pixel_sigma`, `cut_sigma`) blurs them but has
no accountant here. The compute nodes' parts and the owner parts' buffers (BatchNorm's running
statistics) are uploaded without noise; use `model.norm: group` or `none` when they matter.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import torch

from mpsl.spec import PrivacySpec

UPDATE, INPUT, CUT = 0, 1, 2  # the noise streams of a node's seed


def derive_seed(*numbers: int) -> int:
    """A 63-bit seed made from integers (of any sign), the same on every machine."""
    digest = hashlib.blake2b(repr(tuple(int(n) for n in numbers)).encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1


def node_seed(spec: PrivacySpec) -> int:
    """The base of a node's noise seeds: `privacy.noise_seed`, else a secret drawn now."""
    return spec.noise_seed if spec.noise_seed is not None else secrets.randbits(63)


def generator(*numbers: int) -> torch.Generator:
    """A CPU generator seeded from `numbers` (a node's seed, a stream, where it is used)."""
    return torch.Generator().manual_seed(derive_seed(*numbers))


def gaussian_like(x: torch.Tensor, std: float, gen: torch.Generator) -> torch.Tensor:
    """Noise of `x`'s shape and dtype, drawn on the CPU (the same on every device)."""
    noise = torch.randn(x.shape, generator=gen, dtype=x.dtype).mul_(std)
    return noise.to(x.device)


def update_norm(state: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]) -> float:
    """The L2 norm of `state - reference` over the tensors `reference` names."""
    norms = [torch.linalg.vector_norm((state[k] - r).double()) for k, r in reference.items()]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def privatize(state: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor],
              clip_norm: float, noise_multiplier: float,
              gen: torch.Generator) -> tuple[dict[str, torch.Tensor], float]:
    """`state` with each tensor that `reference` names replaced by reference + clip(delta, C)
    + N(0, (noise_multiplier * C)^2), delta = state - reference clipped as one vector to L2
    norm C = `clip_norm`, the noise drawn from `gen` in `reference`'s order; the other tensors
    as they are. Unchanged, to the bit, when nothing is clipped and there is no noise. Also
    the delta's norm before clipping."""
    norm = update_norm(state, reference)
    scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    out = dict(state)
    if scale == 1.0 and noise_multiplier == 0:
        return out, norm
    std = noise_multiplier * clip_norm
    for key, ref in reference.items():
        delta = (state[key] - ref).mul_(scale)
        if std > 0:
            delta.add_(gaussian_like(delta, std, gen))
        out[key] = ref + delta
    return out, norm


@dataclass(frozen=True)
class NoiseLayer:
    """Gaussian noise of std `pixel_sigma` on the first part's input and `cut_sigma` on the
    activations a part sends on, each draw seeded by (node seed, stream, owner, part,
    iteration, micro-batch), so a pass run again draws the same noise."""

    pixel_sigma: float
    cut_sigma: float
    seed: int

    @classmethod
    def of(cls, spec: PrivacySpec, seed: int) -> NoiseLayer | None:
        """The layer `spec` asks for, or None when both sigmas are 0."""
        return cls(spec.pixel_sigma, spec.cut_sigma, seed) if spec.layer else None

    def on_input(self, x: torch.Tensor, owner: int, iteration: int, mb: int) -> torch.Tensor:
        return self._noised(x, self.pixel_sigma, INPUT, owner, 0, iteration, mb)

    def on_cut(self, x: torch.Tensor, owner: int, part: int, iteration: int,
               mb: int) -> torch.Tensor:
        return self._noised(x, self.cut_sigma, CUT, owner, part, iteration, mb)

    def _noised(self, x: torch.Tensor, std: float, *where: int) -> torch.Tensor:
        if std == 0 or not x.is_floating_point():
            return x
        return x + gaussian_like(x, std, generator(self.seed, *where))


def load_accountant() -> Any:
    """dp-accounting, imported on demand (slow to import; only the aggregator needs it)."""
    import dp_accounting

    return dp_accounting


def epsilon(noise_multiplier: float, steps: int, delta: float, sampling_rate: float = 1.0,
            orders: Sequence[float] | None = None) -> float:
    """The epsilon of `steps` Gaussian mechanisms of `noise_multiplier` (each on a Poisson
    sample of rate `sampling_rate`) at `delta`, add/remove adjacency, by dp-accounting's RDP
    accountant (at `orders`, default its own); math.inf without noise."""
    if steps <= 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    dpa = load_accountant()
    event: Any = dpa.GaussianDpEvent(noise_multiplier)
    if sampling_rate < 1:
        event = dpa.PoissonSampledDpEvent(sampling_rate, event)
    accountant = dpa.rdp.RdpAccountant(None if orders is None else list(orders))
    accountant.compose(event, steps)
    return float(accountant.get_epsilon(delta))


def spent(spec: PrivacySpec, steps: int, replace_one: bool = False) -> float | None:
    """The epsilon an owner spent after `steps` aggregations (module docstring), at
    `spec.delta`; None (no guarantee) without noise on the updates."""
    sigma = spec.noise_multiplier if spec.updates else 0.0
    eps = epsilon(sigma / 2 if replace_one else sigma, steps, spec.delta)
    return eps if math.isfinite(eps) else None


def record(spec: PrivacySpec, steps: int) -> dict[str, Any]:
    """The privacy block of results.json after `steps` aggregations."""
    return {
        "epsilon": spent(spec, steps), "epsilon_replace_one": spent(spec, steps, True),
        "delta": spec.delta, "noise_multiplier": spec.noise_multiplier if spec.updates else 0.0,
        "clip_norm": spec.clip_norm, "sampling_rate": 1.0, "steps": steps,
        "unit": "data owner (its whole data set), add/remove adjacency",
        "accountant": f"rdp (dp-accounting {version('dp-accounting')})",
        "pixel_sigma": spec.pixel_sigma, "cut_sigma": spec.cut_sigma,
        "noise": "seeded" if spec.noise_seed is not None else "secret",
    }
