"""The aggregator's evaluation: every sample once, in chunks no norm refuses."""

from __future__ import annotations

import torch

from mpsl.models import build_model
from nodes.aggregator import evaluate


def test_evaluation_leaves_no_chunk_of_one_sample():
    """257 test samples go in chunks of 129 and 128, not 256 and 1: vgg5 with GroupNorm on
    1x1 inputs (one channel a group) refuses a single sample even in eval mode. The result
    is the whole set's, taken in one pass."""
    torch.manual_seed(0)
    model = build_model("vgg5", 10, 1, 1, "group")
    x, y = torch.randn(257, 1, 1, 1), torch.randint(0, 10, (257,))
    acc, loss = evaluate(model, x, y)
    with torch.no_grad():
        out = model.eval()(x)
    assert acc == int((out.argmax(1) == y).sum()) / 257
    assert abs(loss - torch.nn.functional.cross_entropy(out, y).item()) < 1e-5
