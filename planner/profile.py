"""Layer profiles: forward/backward times per micro-batch size (measured points, interpolated;
the least-squares line t(b) = a + c*b as summary), optimizer time, bytes; CSV I/O.
`planner.measure` measures one."""

from __future__ import annotations

import bisect
import csv
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from planner.batched import BatchedProfile

COLUMNS = ("layer", "name", "batch", "fwd_s", "bwd_s", "opt_s", "out_bytes", "param_bytes",
           "act_bytes")
# Optional, after COLUMNS and in this order: values of the whole profile, the same on every
# row, 0 when absent. wake_fwd_s / wake_bwd_s: seconds a forward (backward) action costs more
# when it starts on a processor that was idle or asleep. step_s: seconds a STEP of one part
# costs beyond its layers' opt_s, taken right after a backward with zero_grad, as the nodes
# step; wake_step_s: seconds a STEP costs more after the processor slept.
WAKE_COLUMNS = ("wake_fwd_s", "wake_bwd_s")
STEP_COLUMNS = ("step_s", "wake_step_s")
PROFILE_COLUMNS = WAKE_COLUMNS + STEP_COLUMNS
HEADERS = (COLUMNS, COLUMNS + WAKE_COLUMNS, COLUMNS + PROFILE_COLUMNS)  # the accepted headers
LayerRange = range | tuple[int, int] | int


class ProfileError(ValueError):
    """A profile file is wrong: one line naming the file, the line and the column."""


@dataclass(frozen=True)
class LayerProfile:
    """One layer: fwd/bwd seconds for a micro-batch of b samples, and sizes.

    `points` keeps the measured (batch, fwd_s, bwd_s). With two or more batch sizes, a
    time is interpolated piecewise linearly between the measured sizes and extended along
    the end segments beyond them: a layer's time need not be one line in b, and the points
    are exact where they were measured. `fwd_a + fwd_c * b` is the least-squares line
    through the points: what a
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
    wait or a sleep); layers are timed warm, back to back. `step_s`: what a STEP of one
    part costs beyond its layers' `opt_s` (a layer's step timed warm and repeated) when it
    follows a backward, as in a node; `wake_step_s`: what it costs more after a sleep.
    `batched`: a compute node's batched profile (planner.batched), read from and written to
    the file beside the CSV (`batched_path`); used where the node has `batch_owners: auto`.
    """

    layers: tuple[LayerProfile, ...]
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    wake_fwd_s: float = 0.0
    wake_bwd_s: float = 0.0
    step_s: float = 0.0
    wake_step_s: float = 0.0
    batched: BatchedProfile | None = field(default=None, compare=False)

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

    def step(self, parts: Iterable[LayerRange], slept: bool = False) -> float:
        """Seconds of one STEP action over `parts` (each with its own optimizer), `slept`:
        right after the processor slept (an emulated device)."""
        spans = list(parts)
        return (math.fsum(self.opt(s) for s in spans) + len(spans) * self.step_s
                + (self.wake_step_s if slept and spans else 0.0))

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
                       self.wake_fwd_s * s, self.wake_bwd_s * s, self.step_s * s,
                       self.wake_step_s * s, self.batched)  # a ratio: the same at any speed

    @property
    def profile_values(self) -> tuple[float, ...]:
        """The values of PROFILE_COLUMNS."""
        return (self.wake_fwd_s, self.wake_bwd_s, self.step_s, self.wake_step_s)

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
                                act_bytes=lp.act_bytes,
                                **{c: repr(float(v)) for c, v in
                                   zip(PROFILE_COLUMNS, self.profile_values)}))
        return out

    def to_csv(self, path: str | Path) -> None:
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=COLUMNS + PROFILE_COLUMNS, lineterminator="\n")
            w.writeheader()
            w.writerows(self.rows())
        if self.batched is not None:
            self.batched.write(batched_path(path))

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
        if header not in HEADERS:
            known = COLUMNS + PROFILE_COLUMNS
            extra = [h for h in header if h not in known]
            missing = [c for c in COLUMNS if c not in header]
            what = (f"unknown column '{extra[0]}'" if extra else
                    f"missing column '{missing[0]}'" if missing else "columns out of order")
            raise ProfileError(f"{src}: line 1: {what}; expected the header {','.join(COLUMNS)}"
                               f" (optionally followed by {','.join(WAKE_COLUMNS)}, then "
                               f"{','.join(STEP_COLUMNS)})")
        prof = cls.from_rows(((n, r) for n, r in enumerate(rows[1:], start=2) if r), src,
                             header)
        side = batched_path(path)
        if not side.exists():
            return prof
        try:
            return replace(prof, batched=BatchedProfile.read_one(side))
        except (OSError, ValueError, KeyError) as err:
            raise ProfileError(f"{side}: not a batched profile ({err})") from None

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[int, Sequence[str]]], source: str,
                  columns: Sequence[str] = COLUMNS) -> Profile:
        """Build from numbered CSV rows (line, fields) in `columns` order."""
        columns = tuple(columns)
        by_layer: dict[int, list[tuple[int, dict[str, Any]]]] = {}
        first: tuple[int, tuple[float, ...]] | None = None  # (line, PROFILE_COLUMNS)
        for line, raw in rows:
            if len(raw) != len(columns):
                raise ProfileError(f"{source}: line {line}: {len(raw)} fields, expected "
                                   f"{len(columns)} ({','.join(columns)})")
            rec = {col: _cell(source, line, col, text) for col, text in zip(columns, raw)}
            by_layer.setdefault(rec["layer"], []).append((line, rec))
            here = tuple(rec.get(c, 0.0) for c in PROFILE_COLUMNS)
            if first is None:
                first = (line, here)
            elif here != first[1]:
                j = next(j for j, (a, b) in enumerate(zip(here, first[1])) if a != b)
                raise ProfileError(f"{source}: line {line}, column '{PROFILE_COLUMNS[j]}': got "
                                   f"{here[j]!r}, expected {first[1][j]!r} as on line "
                                   f"{first[0]} (one value per profile)")
        if not by_layer:
            raise ProfileError(f"{source}: line 2: no rows, expected one per layer and batch")
        layers = []
        for i in range(max(by_layer) + 1):
            if i not in by_layer:
                line = min(ln for lst in by_layer.values() for ln, r in lst if r["layer"] > i)
                raise ProfileError(f"{source}: line {line}, column 'layer': layer {i} is missing"
                                   f" (layers must be numbered 0..L-1)")
            layers.append(_layer(source, by_layer[i]))
        wf, wb, st, ws = first[1] if first else (0.0, 0.0, 0.0, 0.0)
        return cls(tuple(layers), source, {}, wf, wb, st, ws)


def batched_path(path: str | Path) -> Path:
    """The batched profile beside a profile CSV: `name.csv` -> `name.batched.csv`."""
    p = Path(path)
    return p.with_name(p.stem + ".batched.csv")


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
