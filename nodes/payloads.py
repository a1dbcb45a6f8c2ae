"""What the messages of a run carry, from the model definition: each part's input and output
shape for one sample, the classes, each part's parameters; and the check of a message's
tensors against them."""

from __future__ import annotations

import copy

import torch

from mpsl.plan import Plan
from mpsl.topology import Topology
from mpsl.training import build_full_model, input_shape, smallest_micro_batch

Spec = tuple[tuple[int, ...], torch.dtype]
TENSORS = "wrong tensors"
SHAPE = "wrong shape"
DTYPE = "wrong dtype"


def check_tensors(tensors: dict[str, torch.Tensor],
                  want: dict[str, Spec]) -> tuple[str, str] | None:
    """Exactly the names of `want`, each of its shape and dtype."""
    if set(tensors) != set(want):
        return TENSORS, f"tensors {sorted(tensors)[:8]}, expected {sorted(want)[:8]}"
    for name, (shape, dtype) in want.items():
        t = tensors[name]
        if tuple(t.shape) != shape:
            return SHAPE, f"{name} of shape {list(t.shape)[:8]}, expected {list(shape)}"
        if t.dtype != dtype:
            return DTYPE, f"{name} of dtype {t.dtype}, expected {dtype}"
    return None


class Model:
    """What the messages of a run carry, from the model definition: each part's input and
    output shape for one sample, the classes, and each part's parameters."""

    def __init__(self, topo: Topology, plan: Plan) -> None:
        sample, self.classes = input_shape(topo)
        model = build_full_model(topo)
        model.eval()
        shapes = [tuple(sample)]
        with torch.no_grad():
            x = torch.zeros(smallest_micro_batch(topo), *sample)  # a norm may refuse 1
            for layer in model:
                x = layer(x)
                shapes.append(tuple(x.shape[1:]))
        self.shapes: list[tuple[int, ...]] = shapes
        self.state: dict[str, Spec] = {k: (tuple(v.shape), v.dtype)
                                       for k, v in model.state_dict().items()}
        self._cut(plan)
        self._views: dict[tuple[int, ...], Model] = {plan.cuts: self}

    def _cut(self, plan: Plan) -> None:
        self.part_in = [self.shapes[a] for a, _ in plan.parts]
        self.part_out = [self.shapes[b] for _, b in plan.parts]
        self.params: list[dict[str, Spec]] = []
        for a, b in plan.parts:
            self.params.append({k: v for k, v in self.state.items()
                                if a <= int(k.split(".", 1)[0]) < b})

    def of(self, plan: Plan) -> Model:
        """The same model cut by `plan` (an owner's own plan)."""
        if plan.cuts not in self._views:
            view = copy.copy(self)
            view._cut(plan)
            self._views[plan.cuts] = view
        return self._views[plan.cuts]

    def params_of(self, parts: list[int]) -> dict[str, Spec]:
        return {k: v for p in parts for k, v in self.params[p].items()}
