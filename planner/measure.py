"""Measuring a profile on this host: every layer's passes at several micro-batch sizes, warm and
after a sleep, and its optimizer step, warm and as a node takes it (right after a backward);
and, without timing, a model's bytes per layer (`byte_profile`).

The wake-up cost: every layer's forward and backward also run `wake_repeats` times each after
`wake_gap_s` of sleep, at the smallest, the middle and the largest batch size, in rounds
spread among the warm ones; `wake_fwd_s` (`wake_bwd_s`) is the median over layers and those
batch sizes of that time (median over repeats) minus the warm one. It is charged once per
action that follows an idle processor, since the layers after the first of an action run warm.

The optimizer step (`mpsl.training.make_optimizer`, as a node builds it): `opt_s` is a layer's
step repeated warm (no backward in between). A node steps right after a backward, with
zero_grad, which can cost more. So every warm and cold pass is followed by the layer's step as
a node takes it (cold: after `wake_gap_s` asleep, as an emulated device steps); `step_s` is the
median over layers with parameters of that step minus `opt_s`, `wake_step_s` the median of the
cold one minus the warm one. The steps use lr = 0, so the weights do not move.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from mpsl.spec import TrainingSpec
from planner.profile import LayerProfile, Profile, fit_line

if TYPE_CHECKING:
    from mpsl.topology import Topology

# Idle time before each pass when the wake-up cost is measured. The cost grows with the gap
# (bench/wake_gap.py measures it), and the processors that pay it most, emulated devices,
# sleep (compute_scale - 1) x every pass: tens of ms.
WAKE_GAP_S = 0.05


def profile_sizes(batch: int) -> list[int]:
    """The micro-batch sizes to profile for batches of `batch`: the powers of 2 below it and
    `batch` itself, so that every size B/N lies between two measured ones."""
    return sorted({1 << k for k in range(max(1, batch).bit_length()) if 1 << k < batch}
                  | {max(1, batch)})


def measure_profile(
    model_name: str,
    input_shape: tuple[int, int, int],
    num_classes: int = 10,
    norm: str = "batch",
    batch_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32),
    repeats: int = 5,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    budget_s: float | None = None,
    wake_repeats: int = 3,
    wake_gap_s: float = WAKE_GAP_S,
    device: str = "cpu",
) -> Profile:
    """Time every layer of `model_name` on this host with one torch thread, on `device`
    (a CUDA device: the model and data live there, and every timer waits for the device).

    Each layer runs on its own (input detached, requiring grad past layer 0; the last layer
    includes the cross-entropy loss) at every batch size; times are the median of `repeats`
    after one warm-up: the typical pass, which is what a run meets. The repeats are rounds
    over every batch size, so each (layer, batch) median draws on passes spread over the whole
    measurement: a shared host's slow spells, seconds long, then disturb a minority of each
    median instead of every pass of one batch size. `act_bytes` counts the distinct
    non-parameter storages saved for backward (saved_tensors_hooks) at the largest batch
    size, per sample (rounded down). `budget_s` stops adding rounds once spent.

    Batch sizes below the smallest the model trains on (2 for BatchNorm on 1x1 maps) are
    raised to it. The wake-up and step costs are measured as the module docstring says; the C
    allocator is set as in a node process (`keep_freed_memory`), so that the times are those
    the nodes will see.
    """
    import torch

    from mpsl.allocator import keep_freed_memory
    from mpsl.models import build_model, layer_labels, smallest_batch

    keep_freed_memory()
    now = device_clock(device)

    if len(input_shape) != 3 or min(batch_sizes, default=0) < 1 or repeats < 1:
        raise ValueError(f"need input_shape (C, H, W), batch sizes >= 1 and repeats >= 1; got "
                         f"{input_shape}, {list(batch_sizes)}, {repeats}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        c, h, w = input_shape
        model = build_model(model_name, num_classes, c, h, norm).train().to(device)
        low = smallest_batch(model, input_shape)  # BatchNorm on 1x1 maps: at least 2
        mods = list(model.children())
        rounds = _Rounds(mods, input_shape, num_classes, sorted({max(low, b) for b in batch_sizes}),
                         [_optimizer(m.parameters(), optimizer, momentum, 0.0) for m in mods],
                         {p.untyped_storage().data_ptr() for p in model.parameters()}, device)
        rounds.run(repeats, wake_repeats, wake_gap_s, budget_s, now)
        opt = _opt_times(mods, optimizer, momentum, repeats, now)
    finally:
        torch.set_num_threads(threads)
    points, (wake_f, wake_b, wake_step), step = _medians(rounds.warm, rounds.cold, opt)
    layers = [_layer(label, mod, points[i], opt[i], rounds.out_b[i], rounds.act_b[i])
              for i, (label, mod) in enumerate(zip(layer_labels(model), mods))]
    return Profile(tuple(layers), f"measured:{model_name}",
                   {"model": model_name, "input_shape": list(input_shape), "norm": norm,
                    "smallest_batch": low, **({"device": device} if device != "cpu" else {})},
                   wake_f, wake_b, step, wake_step)


def device_clock(device: str) -> Callable[[], float]:
    """A timer for work on `device`: `time.perf_counter` on the CPU; on a CUDA device,
    perf_counter once the device has finished what was queued (refused in one line where
    torch sees no such device)."""
    import torch

    if device == "cpu":
        return time.perf_counter
    if not device.startswith("cuda"):
        raise ValueError(f"cannot profile on device {device!r}: cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ValueError(f"cannot profile on {device}: torch sees no CUDA device here")
    dev = torch.device(device)

    def now() -> float:
        torch.cuda.synchronize(dev)
        return time.perf_counter()

    return now


def _layer(label: str, mod: Any, pts: tuple[tuple[int, float, float], ...], opt_s: float,
           out_b: int, act_b: int) -> LayerProfile:
    """One layer's profile from its measured (batch, forward, backward) medians."""
    fa, fc = fit_line([(b, f) for b, f, _ in pts])
    ba, bc = fit_line([(b, w) for b, _, w in pts])
    pb = sum(p.numel() * p.element_size() for p in mod.parameters())
    return LayerProfile(label, fa, fc, ba, bc, opt_s, out_b, pb, act_b, pts)


class _Rounds:
    """The timed passes of `measure_profile`: warm samples per batch size and layer, cold ones
    (after a sleep) at 3 wake sizes at most, and each layer's output and saved bytes."""

    def __init__(self, mods: list[Any], input_shape: tuple[int, int, int], num_classes: int,
                 batch_sizes: list[int], opts: list[Any], pids: set[int],
                 device: str = "cpu") -> None:
        import torch

        c, h, w = input_shape
        self.mods, self.opts, self.pids = mods, opts, pids
        self.batch_sizes = batch_sizes
        # the wake-up cost (0.45 s of sleep per layer and batch size) at 3 sizes at most
        self.wake_sizes = {batch_sizes[0], batch_sizes[len(batch_sizes) // 2], batch_sizes[-1]}
        self.data = {b: (torch.rand(b, c, h, w, device=device),
                         torch.randint(0, num_classes, (b,), device=device))
                     for b in batch_sizes}
        self.warm: dict[int, list[_Samples]] = {b: [([], [], []) for _ in mods]
                                                for b in batch_sizes}
        self.cold: dict[int, list[_Samples]] = {b: [([], [], []) for _ in mods]
                                                for b in self.wake_sizes}
        self.out_b = [0] * len(mods)
        self.act_b = [0] * len(mods)

    def run(self, repeats: int, wake_repeats: int, wake_gap_s: float,
            budget_s: float | None, now: Callable[[], float] = time.perf_counter) -> None:
        """Round 0 warms up; rounds 1..repeats each time every batch size warm, and the cold
        passes run after the warm rounds `cold_after`, spread over the rounds."""
        started = time.perf_counter()
        cold_after = [1 + i * repeats // wake_repeats for i in range(wake_repeats)]
        for rnd in range(repeats + 1):
            for b in self.batch_sizes:
                x0, y = self.data[b]
                for i, times in enumerate(_warm_times(self.mods, self.opts, x0, y, self.pids,
                                                      self.out_b, self.act_b, now)):
                    if rnd:
                        _append(self.warm[b][i], times)
                for _ in range(cold_after.count(rnd) if b in self.wake_sizes else 0):
                    for i, times in enumerate(_cold_times(self.mods, self.opts, x0, y,
                                                          wake_gap_s, now)):
                        _append(self.cold[b][i], times)
            if budget_s is not None and rnd and time.perf_counter() - started > budget_s:
                break


_Samples = tuple[list[float], list[float], list[float]]  # forward, backward, step seconds


def _medians(warm: dict[int, list[_Samples]], cold: dict[int, list[_Samples]],
             opt: list[float]) -> tuple[list[tuple[tuple[int, float, float], ...]],
                                        tuple[float, float, float], float]:
    """Per layer its measured (batch, forward, backward) medians; the wake-up costs of a
    forward, backward and step (median over layers and wake sizes of cold - warm), and the
    in-context step's cost beyond opt_s."""
    med = statistics.median
    n = len(opt)
    points = [tuple((b, med(warm[b][i][0]), med(warm[b][i][1])) for b in warm)
              for i in range(n)]
    # (cold - warm) of every layer at the wake sizes, column j: 0 forward, 1 backward, 2 step
    wake = [[med(cold[b][i][j]) - med(warm[b][i][j]) for b in cold
             for i in range(n) if cold[b][i][j]] for j in range(3)]
    step = [med(warm[b][i][2]) - opt[i] for b in warm for i in range(n) if warm[b][i][2]]
    wf, wb, ws = (_positive_median(v) for v in wake)
    return points, (wf, wb, ws), _positive_median(step)


def _positive_median(values: list[float]) -> float:
    return max(0.0, statistics.median(values)) if values else 0.0


def _append(lists: tuple[list[float], ...], times: tuple[float | None, ...]) -> None:
    for acc, t in zip(lists, times):
        if t is not None:
            acc.append(t)


def _optimizer(params: Any, optimizer: str, momentum: float, lr: float) -> Any:
    """The optimizer a node builds (`mpsl.training.make_optimizer`) with learning rate `lr`,
    or None for a layer without parameters."""
    from mpsl.training import make_optimizer

    params = [p for p in params if p.requires_grad]
    if not params:
        return None
    return make_optimizer(params, TrainingSpec(optimizer=optimizer, momentum=momentum), lr=lr)


def _backward(out: Any, loss: Any) -> None:
    """A layer's backward pass: from the loss on the last layer, else from ones."""
    import torch

    if loss is not None:
        loss.backward()
    else:
        out.backward(torch.ones_like(out))


def _step(opt: Any, now: Callable[[], float]) -> float | None:
    """Seconds of a node's STEP over one optimizer: step, then zero_grad (None: no parameters)."""
    if opt is None:
        return None
    t0 = now()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return now() - t0


def _recording_saved(pids: set[int], saved: dict[int, int]) -> Any:
    """Autograd's saved-tensor hooks that note in `saved` the bytes of every storage kept for
    backward (by storage, so views count once; parameters' storages `pids` not counted)."""
    import torch

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in pids:
            saved[st.data_ptr()] = st.nbytes()
        return t

    return torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)


def _warm_times(mods: Sequence[Any], opts: Sequence[Any], x0: Any, y: Any, pids: set[int],
                out_b: list[int], act_b: list[int], now: Callable[[], float] = time.perf_counter
                ) -> list[tuple[float, float, float | None]]:
    """(forward, backward, step) seconds of every layer, one after the other with no pause;
    sets `out_b` and `act_b` (output and saved bytes per sample, parameters' storages `pids`
    not counted)."""
    import torch

    out = []
    x, b = x0, x0.shape[0]
    for i, mod in enumerate(mods):
        inp = x.detach().requires_grad_(i > 0)
        saved: dict[int, int] = {}
        t0 = now()
        with _recording_saved(pids, saved):
            res = mod(inp)
            loss = torch.nn.functional.cross_entropy(res, y) if i == len(mods) - 1 else None
        t1 = now()
        _backward(res, loss)
        t2 = now()
        out.append((t1 - t0, t2 - t1, _step(opts[i], now)))
        out_b[i] = res.numel() * res.element_size() // b
        act_b[i] = sum(saved.values()) // b
        x = res.detach()
    return out


def _cold_times(mods: Sequence[Any], opts: Sequence[Any], x0: Any, y: Any,
                gap_s: float = WAKE_GAP_S, now: Callable[[], float] = time.perf_counter
                ) -> list[tuple[float, float, float | None]]:
    """(forward, backward, step) seconds of every layer, each after `gap_s` asleep."""
    import torch

    out = []
    x = x0
    for i, mod in enumerate(mods):
        inp = x.detach().requires_grad_(i > 0)
        time.sleep(gap_s)
        t0 = now()
        res = mod(inp)
        loss = torch.nn.functional.cross_entropy(res, y) if i == len(mods) - 1 else None
        t1 = now()
        time.sleep(gap_s)
        t2 = now()
        _backward(res, loss)
        t3 = now()
        if opts[i] is not None:
            time.sleep(gap_s)
        out.append((t1 - t0, t3 - t2, _step(opts[i], now)))
        x = res.detach()
    return out


def _opt_times(mods: Sequence[Any], optimizer: str, momentum: float, repeats: int,
               now: Callable[[], float] = time.perf_counter) -> list[float]:
    """Median seconds of one optimizer step over each layer's parameters (grads set to ones),
    repeated warm."""
    import torch

    out = []
    for mod in mods:
        opt = _optimizer(mod.parameters(), optimizer, momentum, 1e-3)
        if opt is None:
            out.append(0.0)
            continue
        params = [p for g in opt.param_groups for p in g["params"]]
        for p in params:
            p.grad = torch.ones_like(p)
        ts = []
        for rep in range(repeats + 1):
            t0 = now()
            opt.step()
            if rep:
                ts.append(now() - t0)
        for p in params:
            p.grad = None
        out.append(statistics.median(ts))
    return out


def byte_profile(topo: Topology) -> Profile:
    """The topology's model's bytes per layer, as `measure_profile` finds them at the
    topology's batch size (out_bytes, param_bytes, act_bytes), every time zero.

    Untimed and quick (to check memory caps before a run): two forward passes at the
    smallest batch size b the model trains on and at 2b; the bytes a layer saves for backward
    grow linearly with the batch, so the two give them at the batch size `measure_profile`
    reads them at (the largest it measures: B, or b when B is smaller).
    """
    import torch

    from mpsl.models import build_model, layer_labels, smallest_batch
    from mpsl.training import input_shape

    shape, classes = input_shape(topo)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = build_model(topo.model.name, classes, shape[0], shape[1], topo.model.norm)
        model.train()
        low = smallest_batch(model, shape)
        mods = list(model.children())
        pids = {p.untyped_storage().data_ptr() for p in model.parameters()}
        at = {b: _saved_bytes(mods, torch.rand(b, *shape), torch.randint(0, classes, (b,)), pids)
              for b in (low, 2 * low)}
    finally:
        torch.set_num_threads(threads)
    big = max(low, topo.training.batch_size)
    layers = []
    for i, (name, mod) in enumerate(zip(layer_labels(model), mods)):
        (out_b, s1), (_, s2) = at[low][i], at[2 * low][i]
        saved = s1 + (s2 - s1) * (big - low) // low
        pb = sum(p.numel() * p.element_size() for p in mod.parameters())
        layers.append(LayerProfile(name, 0.0, 0.0, 0.0, 0.0, 0.0, out_b, pb, saved // big))
    return Profile(tuple(layers), f"bytes:{topo.model.name}",
                   {"model": topo.model.name, "input_shape": list(shape),
                    "norm": topo.model.norm, "smallest_batch": low})


def _saved_bytes(mods: Sequence[Any], x0: Any, y: Any, pids: set[int]) -> list[tuple[int, int]]:
    """(output bytes per sample, bytes saved for backward) of every layer, one forward each
    as `_warm_times` runs it (parameters' storages `pids` not counted)."""
    import torch

    out = []
    x, b = x0, x0.shape[0]
    for i, mod in enumerate(mods):
        inp = x.detach().requires_grad_(i > 0)
        saved: dict[int, int] = {}
        with _recording_saved(pids, saved):
            res = mod(inp)
            if i == len(mods) - 1:
                torch.nn.functional.cross_entropy(res, y)
        out.append((res.numel() * res.element_size() // b, sum(saved.values())))
        x = res.detach()
    return out
