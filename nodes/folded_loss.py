"""The loss of folded logits: each owner's mean cross-entropy, bitwise as its own copy's.

`FoldedLoss` takes the logits of g owners' micro-batches as rows one owner after another
(g*b, C) (nodes.folding) and gives each owner's `cross_entropy(out_k, y_k)`: one log-softmax
over all rows (a row's result does not depend on the others), then each owner's negative
log-likelihoods summed in the order of torch's CPU kernel (a running sum that passes the
first term up a cascade of partial sums, and every 16th further up) and divided by b. A
probe per shape checks values and the logits' gradient against each owner's own
`cross_entropy`, and times both; where they differ (another backend), or the owners' own is
faster (few owners, many rows), each owner's is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from nodes.folding import clock, spread_rand, unfold


class FoldedLoss:
    """Each owner's mean cross-entropy on its rows of folded logits (g*b, C), as its own
    `cross_entropy(out_k, y_k)` computes it: one log-softmax for all rows, then each owner's
    negative log-likelihoods summed in the order of torch's CPU kernel (a running sum that
    passes element 0 up a cascade of partial sums, every 16th further up) and divided by b.
    Used for a shape once a probe found it bitwise equal to the owners' own losses and their
    logits' gradient, and not slower; otherwise each owner's `cross_entropy`."""

    def __init__(self) -> None:
        self.folds: dict[tuple[Any, ...], bool] = {}

    def __call__(self, logits: torch.Tensor, labels: Sequence[torch.Tensor]) -> torch.Tensor:
        """The owners' losses, (g,)."""
        key = (tuple(logits.shape), logits.dtype, logits.device)
        if key not in self.folds:
            self.folds[key] = self._probe(logits, len(labels))
        return (folded_nll if self.folds[key] else looped_nll)(logits, labels)

    @staticmethod
    def _probe(logits: torch.Tensor, g: int, repeat: int = 3) -> bool:
        """Whether `folded_nll` equals `looped_nll` bitwise (losses, the logits' gradient) on
        random logits shaped as `logits`, and takes no longer (the best of `repeat`)."""
        gen = torch.Generator(device=logits.device).manual_seed(0)
        x = spread_rand(logits, gen)
        labels = list(torch.randint(0, logits.shape[1], (logits.shape[0],), generator=gen,
                                    device=logits.device).chunk(g))
        weights = torch.rand(g, generator=gen, dtype=x.dtype, device=x.device)

        def trial(run: Any) -> tuple[torch.Tensor, torch.Tensor | None, float]:
            t0 = clock(x)
            leaf = x.detach().requires_grad_(True)
            losses = run(leaf, labels)
            torch.autograd.backward(losses * weights, torch.ones_like(losses))
            return losses.detach(), leaf.grad, clock(x) - t0

        (a, ga, _), (b, gb, _) = trial(folded_nll), trial(looped_nll)
        if ga is None or gb is None or not (torch.equal(a, b) and torch.equal(ga, gb)):
            return False
        took = [min(trial(run)[2] for _ in range(repeat)) for run in (folded_nll, looped_nll)]
        return took[0] <= took[1]


def looped_nll(logits: torch.Tensor, labels: Sequence[torch.Tensor]) -> torch.Tensor:
    """Each owner's `cross_entropy` on its block of rows, (g,)."""
    return torch.stack([F.cross_entropy(out, y)
                        for out, y in zip(unfold(logits, len(labels)), labels)])


def folded_nll(logits: torch.Tensor, labels: Sequence[torch.Tensor]) -> torch.Tensor:
    """The same, from one log-softmax (see FoldedLoss)."""
    g = len(labels)
    v = F.log_softmax(logits, 1).gather(1, torch.cat(list(labels)).view(-1, 1)).view(g, -1)
    b = v.shape[1]
    zero = torch.zeros(g, dtype=v.dtype, device=v.device)
    partial = [zero] * 8  # torch's cascade: 8 levels, a level's step 16 for b < 2**40
    power = max(4, (b - 1).bit_length() // 8)
    for i in range(b):
        partial[0] = partial[0] - v[:, i]
        for j in range(7):
            if i & (((1 << power) - 1) << (j * power)):
                break
            partial[j + 1], partial[j] = partial[j + 1] + partial[j], zero
    total = zero
    for p in partial:
        total = total + p
    return total / b
