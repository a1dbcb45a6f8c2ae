"""Layer profiles: forward/backward times per micro-batch size (measured points, interpolated;
the least-squares line t(b) = a + c*b as summary), optimizer time, bytes; CSV I/O."""

from __future__ import annotations

import bisect
import csv
import math
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

COLUMNS = ("layer", "name", "batch", "fwd_s", "bwd_s", "opt_s", "out_bytes", "param_bytes",
           "act_bytes")
# Optional, after COLUMNS: seconds a forward (backward) action costs more when it starts on a
# processor that was idle or asleep, the same on every row (0 when the columns are absent).
WAKE_COLUMNS = ("wake_fwd_s", "wake_bwd_s")
# Idle time before each pass when the wake-up cost is measured. The cost grows with the gap
# (vgg5 on a 2-core VM: 0-0.3 ms after 1 ms, 0.2-0.9 ms after 10 ms, 1.3-2.4 ms per part
# after 50 ms; bench/wake_gap.py), and the processors that pay it most, emulated devices,
# sleep (compute_scale - 1) x every pass: tens of ms.
WAKE_GAP_S = 0.05
LayerRange = range | tuple[int, int] | int


class ProfileError(ValueError):
    """A profile file is wrong: one line naming the file, the line and the column."""


@dataclass(frozen=True)
class LayerProfile:
    """One layer: fwd/bwd seconds for a micro-batch of b samples, and sizes.

    `points` keeps the measured (batch, fwd_s, bwd_s). With two or more batch sizes, a
    time is interpolated piecewise linearly between the measured sizes and extended along
    the end segments beyond them: a layer's time is not one line in b (vgg5 on a 2-core VM:
    the least-squares line through b = 1, 8, 32 is 8% short at b = 8, where the points
    are exact). `fwd_a + fwd_c * b` is the least-squares line through the points: what a
    layer without points (or with one batch size: proportional) takes, and the summary
    `mpsl profile` prints. `out_bytes` and `act_bytes` (saved for backward) are per sample.
    """

    name: str
    fwd_a: float
    fwd_c: float
    bwd_a: float
    bwd_c: float
    opt_s: float = 0.0
    out_bytes: int = 0
    param_bytes: int = 0
    act_bytes: int = 0
    points: tuple[tuple[int, float, float], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "points", tuple(sorted(self.points)))

    def fwd(self, b: float) -> float:
        if len(self.points) < 2:
            return self.fwd_a + self.fwd_c * b
        return _interpolate(self.points, 1, b)

    def bwd(self, b: float) -> float:
        if len(self.points) < 2:
            return self.bwd_a + self.bwd_c * b
        return _interpolate(self.points, 2, b)


def _interpolate(points: Sequence[tuple[int, float, float]], col: int, b: float) -> float:
    """Column `col` of the sorted `points` (two or more) at batch `b`: piecewise linear, the
    end segments extended."""
    i = bisect.bisect_left(points, b, key=lambda p: p[0])
    i = min(max(i, 1), len(points) - 1)
    (b0, *t0), (b1, *t1) = points[i - 1], points[i]
    y0, y1 = t0[col - 1], t1[col - 1]
    if b1 == b0:
        return y0
    return max(0.0, y0 + (y1 - y0) * (b - b0) / (b1 - b0))


def profile_sizes(batch: int) -> list[int]:
    """The micro-batch sizes to profile for batches of `batch`: the powers of 2 below it and
    `batch` itself, so that every size B/N lies between two measured ones."""
    return sorted({1 << k for k in range(max(1, batch).bit_length()) if 1 << k < batch}
                  | {max(1, batch)})


def fit_line(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares (a, c) of t = a + c*b, kept non-negative; one batch size gives a = 0."""
    bs = {b for b, _ in points}
    if len(bs) == 1:
        b0 = next(iter(bs))
        return 0.0, statistics.fmean(t for _, t in points) / b0
    mb = statistics.fmean(b for b, _ in points)
    mt = statistics.fmean(t for _, t in points)
    sbb = math.fsum((b - mb) ** 2 for b, _ in points)
    c = math.fsum((b - mb) * (t - mt) for b, t in points) / sbb
    a = mt - c * mb
    if c < 0:  # time falling with the batch: noise; a constant
        return mt, 0.0
    if a < 0:  # through the origin
        return 0.0, math.fsum(b * t for b, t in points) / math.fsum(b * b for b, _ in points)
    return a, c


def _span(layers: LayerRange) -> range:
    if isinstance(layers, int):
        return range(layers, layers + 1)
    if isinstance(layers, tuple):
        return range(layers[0], layers[1])
    return layers


@dataclass(frozen=True)
class Profile:
    """Per-layer costs of one model on one machine; `fwd((a, b), n)` sums layers [a, b).

    `wake_fwd_s` / `wake_bwd_s`: what a forward / backward action (a part's layers run back
    to back) costs more when the processor was idle just before it (caches refilled after a
    wait or a sleep); layers are timed warm, back to back.
    """

    layers: tuple[LayerProfile, ...]
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    wake_fwd_s: float = 0.0
    wake_bwd_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.layers:
            raise ProfileError(f"{self.source or '<profile>'}: a profile needs at least one layer")

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def names(self) -> list[str]:
        return [lp.name for lp in self.layers]

    def fwd(self, layers: LayerRange, b: float) -> float:
        """Forward seconds of `layers` for a micro-batch of `b` samples."""
        return math.fsum(self.layers[i].fwd(b) for i in _span(layers))

    def bwd(self, layers: LayerRange, b: float) -> float:
        return math.fsum(self.layers[i].bwd(b) for i in _span(layers))

    def fit(self, layers: LayerRange) -> tuple[float, float, float, float]:
        """Summed (fwd_a, fwd_c, bwd_a, bwd_c) of `layers`."""
        ls = [self.layers[i] for i in _span(layers)]
        return (math.fsum(lp.fwd_a for lp in ls), math.fsum(lp.fwd_c for lp in ls),
                math.fsum(lp.bwd_a for lp in ls), math.fsum(lp.bwd_c for lp in ls))

    def opt(self, layers: LayerRange) -> float:
        return math.fsum(self.layers[i].opt_s for i in _span(layers))

    def param_bytes(self, layers: LayerRange) -> int:
        return sum(self.layers[i].param_bytes for i in _span(layers))

    def act_bytes(self, layers: LayerRange) -> int:
        return sum(self.layers[i].act_bytes for i in _span(layers))

    def out_bytes(self, layer: int) -> int:
        return self.layers[layer].out_bytes

    def scaled(self, s: float) -> Profile:
        """Every time multiplied by `s` (a node `s` times slower); bytes unchanged."""
        if s == 1:
            return self
        out = tuple(
            replace(lp, fwd_a=lp.fwd_a * s, fwd_c=lp.fwd_c * s, bwd_a=lp.bwd_a * s,
                    bwd_c=lp.bwd_c * s, opt_s=lp.opt_s * s,
                    points=tuple((b, f * s, w * s) for b, f, w in lp.points))
            for lp in self.layers
        )
        return Profile(out, f"{self.source} x{s:g}" if self.source else f"x{s:g}", self.meta,
                       self.wake_fwd_s * s, self.wake_bwd_s * s)

    @classmethod
    def synthetic(cls, num_layers: int, *, fwd: tuple[float, float] = (0.0, 1e-3),
                  bwd: tuple[float, float] = (0.0, 2e-3), opt_s: float = 1e-4,
                  out_bytes: int | Sequence[int] = 4096, param_bytes: int | Sequence[int] = 4096,
                  act_bytes: int | Sequence[int] = 8192, source: str = "synthetic") -> Profile:
        """Identical layers (or per-layer byte sizes), for tests and benchmarks."""
        def at(v: int | Sequence[int], i: int) -> int:
            return int(v) if isinstance(v, (int, float)) else int(v[i])
        return cls(tuple(
            LayerProfile(f"layer{i}", fwd[0], fwd[1], bwd[0], bwd[1], opt_s, at(out_bytes, i),
                         at(param_bytes, i), at(act_bytes, i))
            for i in range(num_layers)
        ), source)

    # ------------------------------------------------------------------------------ CSV

    def rows(self) -> list[dict[str, Any]]:
        """One row per (layer, batch); a layer with no measured points is written at b = 1, 2."""
        out = []
        for i, lp in enumerate(self.layers):
            points = lp.points or tuple((b, lp.fwd(b), lp.bwd(b)) for b in (1, 2))
            for b, f, w in points:
                out.append(dict(layer=i, name=lp.name, batch=b, fwd_s=repr(float(f)),
                                bwd_s=repr(float(w)), opt_s=repr(float(lp.opt_s)),
                                out_bytes=lp.out_bytes, param_bytes=lp.param_bytes,
                                act_bytes=lp.act_bytes, wake_fwd_s=repr(float(self.wake_fwd_s)),
                                wake_bwd_s=repr(float(self.wake_bwd_s))))
        return out

    def to_csv(self, path: str | Path) -> None:
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=COLUMNS + WAKE_COLUMNS, lineterminator="\n")
            w.writeheader()
            w.writerows(self.rows())

    @classmethod
    def from_csv(cls, path: str | Path) -> Profile:
        """Read a profile CSV; any fault raises ProfileError naming file, line and column."""
        src = str(path)
        try:
            with open(path, newline="") as fh:
                rows = list(csv.reader(fh))
        except OSError as err:
            raise ProfileError(f"{src}: cannot read the profile ({err.strerror})") from None
        except (csv.Error, UnicodeDecodeError) as err:
            raise ProfileError(f"{src}: not a CSV file ({err})") from None
        if not rows:
            raise ProfileError(f"{src}: line 1: empty file, expected the header "
                               f"{','.join(COLUMNS)}")
        header = tuple(h.strip() for h in rows[0])
        if header not in (COLUMNS, COLUMNS + WAKE_COLUMNS):
            known = COLUMNS + WAKE_COLUMNS
            extra = [h for h in header if h not in known]
            missing = [c for c in COLUMNS if c not in header]
            what = (f"unknown column '{extra[0]}'" if extra else
                    f"missing column '{missing[0]}'" if missing else "columns out of order")
            raise ProfileError(f"{src}: line 1: {what}; expected the header {','.join(COLUMNS)}"
                               f" (optionally followed by {','.join(WAKE_COLUMNS)})")
        return cls.from_rows(((n, r) for n, r in enumerate(rows[1:], start=2) if r), src,
                             header)

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[int, Sequence[str]]], source: str,
                  columns: Sequence[str] = COLUMNS) -> Profile:
        """Build from numbered CSV rows (line, fields) in `columns` order."""
        columns = tuple(columns)
        by_layer: dict[int, list[tuple[int, dict[str, Any]]]] = {}
        wake: tuple[int, tuple[float, float]] | None = None
        for line, raw in rows:
            if len(raw) != len(columns):
                raise ProfileError(f"{source}: line {line}: {len(raw)} fields, expected "
                                   f"{len(columns)} ({','.join(columns)})")
            rec = {col: _cell(source, line, col, text) for col, text in zip(columns, raw)}
            by_layer.setdefault(rec["layer"], []).append((line, rec))
            here = (rec.get("wake_fwd_s", 0.0), rec.get("wake_bwd_s", 0.0))
            if wake is None:
                wake = (line, here)
            elif here != wake[1]:
                j = 0 if here[0] != wake[1][0] else 1
                raise ProfileError(f"{source}: line {line}, column '{WAKE_COLUMNS[j]}': got "
                                   f"{here[j]!r}, expected {wake[1][j]!r} as on line {wake[0]}"
                                   f" (one value per profile)")
        if not by_layer:
            raise ProfileError(f"{source}: line 2: no rows, expected one per layer and batch")
        layers = []
        for i in range(max(by_layer) + 1):
            if i not in by_layer:
                line = min(ln for lst in by_layer.values() for ln, r in lst if r["layer"] > i)
                raise ProfileError(f"{source}: line {line}, column 'layer': layer {i} is missing"
                                   f" (layers must be numbered 0..L-1)")
            layers.append(_layer(source, by_layer[i]))
        wf, wb = wake[1] if wake else (0.0, 0.0)
        return cls(tuple(layers), source, wake_fwd_s=wf, wake_bwd_s=wb)


def _cell(source: str, line: int, col: str, text: str) -> Any:
    text = text.strip()
    if col == "name":
        if not text:
            raise ProfileError(f"{source}: line {line}, column 'name': empty, expected a label")
        return text
    integer = col in ("layer", "batch", "out_bytes", "param_bytes", "act_bytes")
    try:
        value: float = int(text) if integer else float(text)
    except ValueError:
        kind = "an integer" if integer else "a number of seconds"
        raise ProfileError(f"{source}: line {line}, column '{col}': got {text!r}, "
                           f"expected {kind}") from None
    low = 1 if col == "batch" else 0
    if not math.isfinite(value) or value < low:
        raise ProfileError(f"{source}: line {line}, column '{col}': got {text!r}, expected "
                           f"a finite number >= {low}")
    return value


def _layer(source: str, recs: list[tuple[int, dict[str, Any]]]) -> LayerProfile:
    line0, first = recs[0]
    seen: dict[int, int] = {}
    for line, r in recs:
        for col in ("name", "opt_s", "out_bytes", "param_bytes", "act_bytes"):
            if r[col] != first[col]:
                raise ProfileError(f"{source}: line {line}, column '{col}': got {r[col]!r}, "
                                   f"expected {first[col]!r} as on line {line0} (same layer)")
        if r["batch"] in seen:
            raise ProfileError(f"{source}: line {line}, column 'batch': batch {r['batch']} of "
                               f"layer {r['layer']} already on line {seen[r['batch']]}")
        seen[r["batch"]] = line
    points = tuple(sorted((r["batch"], r["fwd_s"], r["bwd_s"]) for _, r in recs))
    fa, fc = fit_line([(b, f) for b, f, _ in points])
    ba, bc = fit_line([(b, w) for b, _, w in points])
    return LayerProfile(first["name"], fa, fc, ba, bc, first["opt_s"], first["out_bytes"],
                        first["param_bytes"], first["act_bytes"], points)


# ------------------------------------------------------------------------------ measurement


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
) -> Profile:
    """Time every layer of `model_name` on this host with one torch thread.

    Each layer runs on its own (input detached, requiring grad past layer 0; the last layer
    includes the cross-entropy loss) at every batch size; times are the median of `repeats`
    after one warm-up: the typical pass, which is what a run meets. The repeats are rounds
    over every batch size, so each (layer, batch) median draws on passes spread over the whole
    measurement: a shared host's slow spells, seconds long, then disturb a minority of each
    median instead of every pass of one batch size (vgg5 on a 2-core VM: back-to-back
    profiles timed in blocks read the owner part 4.98-7.99 ms forward at b = 8).
    `act_bytes` counts the distinct non-parameter storages saved for backward
    (saved_tensors_hooks), per sample. `budget_s` stops adding rounds once spent.

    Batch sizes below the smallest the model trains on (2 for BatchNorm on 1x1 maps) are
    raised to it. The wake-up cost: every layer's forward and backward also run
    `wake_repeats` times each after `wake_gap_s` of sleep, at the smallest, the middle and
    the largest batch size, in rounds spread among the warm ones; `wake_fwd_s` (`wake_bwd_s`)
    is the median over layers and those batch sizes of that time (median over repeats) minus
    the warm one. It is charged once per action that follows an idle processor, since the
    layers after the first of an action run warm. The C allocator is set as in a node process
    (`keep_freed_memory`), so that the times are those the nodes will see.
    """
    import torch

    from mpsl.allocator import keep_freed_memory
    from mpsl.models import build_model, layer_labels, smallest_batch

    keep_freed_memory()

    if len(input_shape) != 3 or min(batch_sizes, default=0) < 1 or repeats < 1:
        raise ValueError(f"need input_shape (C, H, W), batch sizes >= 1 and repeats >= 1; got "
                         f"{input_shape}, {list(batch_sizes)}, {repeats}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    started = time.perf_counter()
    try:
        torch.manual_seed(0)
        c, h, w = input_shape
        model = build_model(model_name, num_classes, c, h, norm).train()
        low = smallest_batch(model, input_shape)  # BatchNorm on 1x1 maps: at least 2
        batch_sizes = sorted({max(low, b) for b in batch_sizes})
        # the wake-up cost (0.3 s of sleep per layer and batch size) at 3 sizes at most
        wake_sizes = {batch_sizes[0], batch_sizes[len(batch_sizes) // 2], batch_sizes[-1]}
        # the warm rounds after which the cold passes run, spread over rounds 1..repeats
        cold_after = [1 + i * repeats // wake_repeats for i in range(wake_repeats)]
        labels, mods = layer_labels(model), list(model.children())
        pids = {p.untyped_storage().data_ptr() for p in model.parameters()}
        data = {b: (torch.rand(b, c, h, w), torch.randint(0, num_classes, (b,)))
                for b in batch_sizes}
        warm = {b: [([], []) for _ in mods] for b in batch_sizes}
        cold = {b: [([], []) for _ in mods] for b in wake_sizes}
        out_b = [0] * len(mods)
        act_b = [0] * len(mods)
        for rnd in range(repeats + 1):  # round 0 warms up
            for b in batch_sizes:
                x0, y = data[b]
                for i, (f, w) in enumerate(_warm_times(mods, x0, y, pids, out_b, act_b)):
                    if rnd:
                        warm[b][i][0].append(f)
                        warm[b][i][1].append(w)
                model.zero_grad(set_to_none=True)
                for _ in range(cold_after.count(rnd) if b in wake_sizes else 0):
                    for i, (f, w) in enumerate(_cold_times(mods, x0, y, wake_gap_s)):
                        cold[b][i][0].append(f)
                        cold[b][i][1].append(w)
            if budget_s is not None and rnd and time.perf_counter() - started > budget_s:
                break
        times = [[(b, statistics.median(warm[b][i][0]), statistics.median(warm[b][i][1]))
                  for b in batch_sizes] for i in range(len(mods))]
        wake_f = [statistics.median(fs) - statistics.median(warm[b][i][0])
                  for b in wake_sizes for i, (fs, _) in enumerate(cold[b]) if fs]
        wake_b = [statistics.median(ws) - statistics.median(warm[b][i][1])
                  for b in wake_sizes for i, (_, ws) in enumerate(cold[b]) if ws]
        opt = _opt_times(mods, optimizer, momentum, repeats)
    finally:
        torch.set_num_threads(threads)
    layers = []
    for i, mod in enumerate(mods):
        pts = tuple(times[i])
        fa, fc = fit_line([(b, f) for b, f, _ in pts])
        ba, bc = fit_line([(b, w) for b, _, w in pts])
        pb = sum(p.numel() * p.element_size() for p in mod.parameters())
        layers.append(LayerProfile(labels[i], fa, fc, ba, bc, opt[i], out_b[i], pb, act_b[i], pts))
    wake = (max(0.0, statistics.median(wake_f)), max(0.0, statistics.median(wake_b))) \
        if wake_f else (0.0, 0.0)
    return Profile(tuple(layers), f"measured:{model_name}",
                   {"model": model_name, "input_shape": list(input_shape), "norm": norm,
                    "smallest_batch": low},
                   *wake)


def _backward(out: Any, loss: Any) -> None:
    """A layer's backward pass: from the loss on the last layer, else from ones."""
    import torch

    if loss is not None:
        loss.backward()
    else:
        out.backward(torch.ones_like(out))


def _warm_times(mods: Sequence[Any], x0: Any, y: Any, pids: set[int], out_b: list[int],
                act_b: list[int]) -> list[tuple[float, float]]:
    """(forward, backward) seconds of every layer, one after the other with no pause; sets
    `out_b` and `act_b` (output and saved bytes per sample, parameters' storages `pids` not
    counted)."""
    import torch

    out = []
    x, b = x0, x0.shape[0]
    for i, mod in enumerate(mods):
        inp = x.detach().requires_grad_(i > 0)
        saved: dict[int, int] = {}

        def pack(t: torch.Tensor, saved: dict[int, int] = saved) -> torch.Tensor:
            st = t.untyped_storage()
            if st.data_ptr() not in pids:
                saved[st.data_ptr()] = st.nbytes()
            return t

        t0 = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            res = mod(inp)
            loss = torch.nn.functional.cross_entropy(res, y) if i == len(mods) - 1 else None
        t1 = time.perf_counter()
        _backward(res, loss)
        t2 = time.perf_counter()
        out.append((t1 - t0, t2 - t1))
        out_b[i] = res.numel() * res.element_size() // b
        act_b[i] = sum(saved.values()) // b
        x = res.detach()
    return out


def _cold_times(mods: Sequence[Any], x0: Any, y: Any,
                gap_s: float = WAKE_GAP_S) -> list[tuple[float, float]]:
    """(forward, backward) seconds of every layer, each pass after `gap_s` asleep."""
    import torch

    out = []
    x = x0
    for i, mod in enumerate(mods):
        inp = x.detach().requires_grad_(i > 0)
        time.sleep(gap_s)
        t0 = time.perf_counter()
        res = mod(inp)
        loss = torch.nn.functional.cross_entropy(res, y) if i == len(mods) - 1 else None
        t1 = time.perf_counter()
        time.sleep(gap_s)
        t2 = time.perf_counter()
        _backward(res, loss)
        t3 = time.perf_counter()
        mod.zero_grad(set_to_none=True)
        out.append((t1 - t0, t3 - t2))
        x = res.detach()
    return out


def _opt_times(mods: Sequence[Any], optimizer: str, momentum: float, repeats: int) -> list[float]:
    """Median seconds of one optimizer step over each layer's parameters (grads set to ones)."""
    import torch

    out = []
    for mod in mods:
        params = [p for p in mod.parameters() if p.requires_grad]
        if not params:
            out.append(0.0)
            continue
        for p in params:
            p.grad = torch.ones_like(p)
        opt = (torch.optim.Adam(params, lr=1e-3) if optimizer == "adam"
               else torch.optim.SGD(params, lr=1e-3, momentum=momentum))
        ts = []
        for rep in range(repeats + 1):
            t0 = time.perf_counter()
            opt.step()
            if rep:
                ts.append(time.perf_counter() - t0)
        for p in params:
            p.grad = None
        out.append(statistics.median(ts))
    return out
