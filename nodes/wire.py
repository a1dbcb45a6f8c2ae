"""Wire format: a Message as one ZeroMQ multipart message (msgpack header + raw tensor frames).

Frame 0 is a msgpack map ``{v, kind, run, src, owner, iter, mb, seq, tensors, meta}`` where
``tensors`` is a list of ``{name, dtype, shape}``; frames 1..n are the raw C-contiguous bytes of
each tensor, in the same order. No pickle, no eval: the header is plain msgpack data and tensor
bytes are only ever reinterpreted as one of the allow-listed dtypes.

Ownership (why a send never sees a tensor change and a received tensor is never corrupted):

* ``encode`` snapshots every tensor (one single-threaded memcpy) into a buffer that only the
  returned frames reference (``bytes`` below 64 KiB), so the caller may modify or free its
  tensors as soon as ``encode`` returns, even while an Outbox is still sending the frames.
  ``encode(copy=False)`` skips the snapshot, for tensors nobody will ever modify: a
  contiguous CPU tensor's frame is then a view of its own memory (no copy at all, also with
  ``requires_grad``), which ``send_multipart(copy=False)`` hands to ZeroMQ as it is; any other
  tensor (strided, lazily negated or conjugated, on another device) is copied once.
* ``decode`` wraps a received ``zmq.Frame`` (``recv_multipart(copy=False)``) without copying
  (numpy ``frombuffer`` then ``torch.from_numpy``): such a frame is private to this message,
  writable, and kept alive by the tensor. Small frames (< ``ZEROCOPY_MIN_BYTES``), frames not
  aligned to the itemsize, and any other buffer (bytes, memoryview: read-only, or shared with
  the caller) are copied into a fresh, aligned, writable buffer.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
import torch
import zmq

from mpsl.actions import Msg

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DTYPES",
    "Kind",
    "Message",
    "WIRE_VERSION",
    "WireError",
    "decode",
    "encode",
    "message_nbytes",
]

WIRE_VERSION = 1
DEFAULT_MAX_BYTES = 2 << 30  # 2 GiB per message, header included
MAX_HEADER_BYTES = 16 << 20
MAX_TENSORS = 65536
MAX_DIMS = 32
MAX_NAME_LEN = 1024
MAX_META_DEPTH = 32
ZEROCOPY_MIN_BYTES = 64 << 10
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


Kind = Msg  # the message kinds are the core's (mpsl.actions.Msg)

_KINDS = {k.value: k for k in Kind}

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "int64": torch.int64,
    "int32": torch.int32,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
_DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
_NUMPY = {"float32": np.float32, "float16": np.float16, "float64": np.float64, "int64": np.int64,
          "int32": np.int32, "uint8": np.uint8, "bool": np.bool_,
          "bfloat16": np.int16}  # numpy has no bfloat16: its bytes travel as int16
_ITEMSIZE = {k: torch.empty((), dtype=v).element_size() for k, v in DTYPES.items()}


class WireError(ValueError):
    """A message that cannot be encoded or must not be accepted; the text names the reason."""


@dataclass
class Message:
    """One message between nodes; ``tensors`` keeps its order on the wire."""

    kind: str
    src: str
    owner: int = -1
    iter: int = -1
    mb: int = -1
    seq: int = 0
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    run: str = ""


# --------------------------------------------------------------------------- checks


def _check_int(name: str, x: Any, lo: int = -1) -> int:
    if type(x) is not int:  # bool is an int subclass: refuse it too
        raise WireError(f"{name} must be an int, got {type(x).__name__}")
    if not lo <= x <= _INT64_MAX:
        raise WireError(f"{name}={x} out of range [{lo}, 2**63)")
    return x


def _check_str(name: str, x: Any, max_len: int = MAX_NAME_LEN) -> str:
    if not isinstance(x, str):
        raise WireError(f"{name} must be a str, got {type(x).__name__}")
    if len(x) > max_len:
        raise WireError(f"{name} longer than {max_len} characters")
    return str(x)


def _scalars_ok(src: Any, run: Any, owner: Any, it: Any, mb: Any, seq: Any) -> bool:
    """Whether a header's names and numbers are all well-formed, in one test: each check
    below names what is wrong, but costs a node CPU on every message it sends or receives."""
    return (type(src) is str and type(run) is str
            and len(src) <= MAX_NAME_LEN and len(run) <= MAX_NAME_LEN
            and type(owner) is int and type(it) is int and type(mb) is int and type(seq) is int
            and -1 <= owner <= _INT64_MAX and -1 <= it <= _INT64_MAX
            and -1 <= mb <= _INT64_MAX and 0 <= seq <= _INT64_MAX)


def _check_kind(x: Any) -> Kind:
    if not isinstance(x, str) or x not in _KINDS:
        raise WireError(f"unknown kind {x!r}")
    return _KINDS[x]


def _check_plain(x: Any, depth: int = 0, path: str = "meta") -> None:
    """Meta must be plain data: None, bool, int, float, str, lists and str-keyed dicts."""
    if depth > MAX_META_DEPTH:
        raise WireError(f"{path} nested deeper than {MAX_META_DEPTH}")
    if x is None or isinstance(x, (bool, float, str)):
        return
    if isinstance(x, int):
        if not _INT64_MIN <= x <= (1 << 64) - 1:
            raise WireError(f"{path}: int out of msgpack range")
        return
    if isinstance(x, (list, tuple)):
        for i, v in enumerate(x):
            _check_plain(v, depth + 1, f"{path}[{i}]")
        return
    if isinstance(x, dict):
        for k, v in x.items():
            if not isinstance(k, str):
                raise WireError(f"{path}: key {k!r} is not a str")
            _check_plain(v, depth + 1, f"{path}.{k}")
        return
    raise WireError(f"{path}: {type(x).__name__} is not plain data")


def _numel(shape: Any, name: str, limit: int) -> int:
    """Validate a header shape and return its element count, refused past ``limit``."""
    if not isinstance(shape, list):
        raise WireError(f"tensor {name!r}: shape must be a list")
    if len(shape) > MAX_DIMS:
        raise WireError(f"tensor {name!r}: {len(shape)} dims > {MAX_DIMS}")
    n = 1
    for d in shape:  # at most MAX_DIMS int64 factors: the product stays a small Python int
        if type(d) is not int or d < 0:
            raise WireError(f"tensor {name!r}: bad dimension {d!r} in shape")
        n *= d
    if n > limit:  # before any allocation
        raise WireError(f"tensor {name!r}: shape {shape[:8]} over the size cap")
    return n


# --------------------------------------------------------------------------- encode


def _frame(t: torch.Tensor, copy: bool, alloc: Callable[[int], np.ndarray] | None
           ) -> bytes | memoryview:
    """The raw C-contiguous bytes of ``t``, in a buffer of its own unless ``copy`` is False.

    Works through numpy where it can: on a busy machine every torch call costs microseconds.
    """
    if t.layout != torch.strided:
        raise WireError(f"layout {t.layout} is not supported")
    if t.requires_grad:
        t = t.detach()
    src = None
    if t.is_cpu and t.is_contiguous():
        try:  # numpy has no bfloat16: carry its bytes as int16
            src = (t.view(torch.int16) if t.dtype is torch.bfloat16 else t).numpy()
        except RuntimeError:  # a lazy negation or conjugation bit: resolve it below
            src = None
    if src is None:
        t = t.resolve_conj().resolve_neg().to("cpu").contiguous()  # a private copy
        src = (t.view(torch.int16) if t.dtype is torch.bfloat16 else t).numpy()
        copy = copy and alloc is not None  # already a private copy; move it into alloc's
    if not copy and src.size:  # the tensor's memory in its shape; ZeroMQ reads its bytes
        return memoryview(src)  # type: ignore[arg-type]
    raw = src.reshape(-1).view(np.uint8)
    if raw.nbytes < ZEROCOPY_MIN_BYTES:
        return raw.tobytes()  # small: an immutable snapshot (pyzmq copies these anyway)
    # A single-threaded memcpy: torch's copy_ may wake its intra-op thread pool, which
    # costs milliseconds on a busy machine for no gain.
    buf = alloc(raw.nbytes) if alloc is not None else np.empty(raw.nbytes, dtype=np.uint8)
    np.copyto(buf, raw)
    return memoryview(buf)  # type: ignore[arg-type]


def encode(msg: Message, *, copy: bool = True,
           alloc: Callable[[int], np.ndarray] | None = None) -> list[bytes | memoryview]:
    """Frames of ``msg``: a msgpack header, then one raw buffer per tensor.

    With ``copy=True`` (the default) every tensor is snapshotted, so the caller may change its
    tensors right away. ``copy=False`` sends contiguous CPU tensors by reference (the frame
    is a view of the tensor's memory and keeps it alive): only for callers that never modify
    them afterwards. ``alloc(nbytes)`` may supply the snapshot
    buffers of 64 KiB and more (1-D uint8 numpy arrays of exactly ``nbytes``), for reuse;
    smaller snapshots are ``bytes``. Send with
    ``send_multipart(frames, copy=False)``.
    """
    kind = _check_kind(msg.kind.value if isinstance(msg.kind, Kind) else msg.kind)
    if not isinstance(msg.tensors, (dict, Mapping)):  # a dict is checked the fastest
        raise WireError("tensors must be a mapping of name -> tensor")
    if not isinstance(msg.meta, dict):
        raise WireError("meta must be a dict")
    if msg.meta:
        _check_plain(msg.meta)
    if len(msg.tensors) > MAX_TENSORS:
        raise WireError(f"more than {MAX_TENSORS} tensors")
    descs: list[dict[str, Any]] = []
    frames: list[bytes | memoryview] = []
    for name, t in msg.tensors.items():
        _check_str("tensor name", name)
        if not isinstance(t, torch.Tensor):
            raise WireError(f"tensor {name!r}: expected a torch.Tensor, got {type(t).__name__}")
        dname = _DTYPE_NAMES.get(t.dtype)
        if dname is None:
            raise WireError(f"tensor {name!r}: dtype {t.dtype} not allowed")
        shape = list(t.shape)
        if len(shape) > MAX_DIMS:
            raise WireError(f"tensor {name!r}: more than {MAX_DIMS} dims")
        descs.append({"name": name, "dtype": dname, "shape": shape})
        frames.append(_frame(t, copy, alloc))
    src, run, owner, it, mb, seq = msg.src, msg.run, msg.owner, msg.iter, msg.mb, msg.seq
    if not _scalars_ok(src, run, owner, it, mb, seq):  # then name the first bad one
        _check_str("run", run), _check_str("src", src), _check_int("owner", owner)
        _check_int("iter", it), _check_int("mb", mb), _check_int("seq", seq, lo=0)
    header = {"v": WIRE_VERSION, "kind": kind.value, "run": run, "src": src, "owner": owner,
              "iter": it, "mb": mb, "seq": seq, "tensors": descs, "meta": msg.meta}
    head = msgpack.packb(header, use_bin_type=True)
    if len(head) > MAX_HEADER_BYTES:
        raise WireError(f"header of {len(head)} bytes > {MAX_HEADER_BYTES}")
    return [head, *frames]


def message_nbytes(frames: Sequence[Any]) -> int:
    """Bytes on the wire for ``frames``: header plus tensor frames."""
    return sum(_buffer(f)[0].nbytes for f in frames)


# --------------------------------------------------------------------------- decode

_HEADER_KEYS = {"v", "kind", "run", "src", "owner", "iter", "mb", "seq", "tensors", "meta"}
_DESC_KEYS = {"name", "dtype", "shape"}


def _buffer(f: Any) -> tuple[memoryview, bool]:
    """A flat byte view of a frame and whether it is private to this message (a zmq.Frame)."""
    if type(f) is zmq.Frame:  # received with copy=False: its buffer is flat bytes already
        return f.buffer, True
    private = isinstance(f, zmq.Frame)
    try:
        mv = f.buffer if private else memoryview(f)
        if mv.ndim != 1 or mv.format not in ("B", "b", "c"):
            mv = mv.cast("B")
    except (TypeError, ValueError) as e:
        raise WireError(f"frame is not a contiguous byte buffer: {e}") from None
    return mv, private


def _parse_header(buf: memoryview, max_bytes: int) -> dict[str, Any]:
    if buf.nbytes > min(MAX_HEADER_BYTES, max_bytes):
        raise WireError(f"header of {buf.nbytes} bytes over the cap")
    try:
        h = msgpack.unpackb(buf, raw=False, strict_map_key=True, use_list=True)
    except Exception as e:  # msgpack raises several types (ExtraData, FormatError, ...)
        raise WireError(f"header is not msgpack: {type(e).__name__}: {e}") from None
    if type(h) is dict and h.keys() == _HEADER_KEYS and type(h["v"]) is int \
            and h["v"] == WIRE_VERSION:
        return h
    if not isinstance(h, dict):
        raise WireError(f"header is a {type(h).__name__}, not a map")
    if "v" in h and (type(h["v"]) is not int or h["v"] != WIRE_VERSION):
        raise WireError(f"unknown wire version {h['v']!r}")
    missing, extra = _HEADER_KEYS - set(h), set(h) - _HEADER_KEYS
    raise WireError(f"header keys: missing {sorted(missing)}, unexpected {sorted(extra)}")


_Fields = tuple[Kind, str, str, int, int, int, int]  # kind, src, run, owner, iter, mb, seq


def _fields(h: dict[str, Any], known_senders: Container[str] | None) -> _Fields:
    """The header's scalars, checked (field by field only where something is wrong)."""
    kind, src, run = h["kind"], h["src"], h["run"]
    owner, it, mb, seq = h["owner"], h["iter"], h["mb"], h["seq"]
    ok = type(kind) is str and kind in _KINDS and _scalars_ok(src, run, owner, it, mb, seq)
    if not ok:
        _check_kind(kind), _check_str("src", src)
    if known_senders is not None and src not in known_senders:
        raise WireError(f"unknown sender {src!r}")
    if not ok:
        _check_str("run", run), _check_int("owner", owner), _check_int("iter", it)
        _check_int("mb", mb), _check_int("seq", seq, lo=0)
    return _KINDS[kind], src, run, owner, it, mb, seq


def _check_descriptors(descs: list[Any], sizes: list[int], max_bytes: int) -> None:
    """Check every tensor's descriptor and that its frame's length (of `sizes`, the header
    first) matches its shape and dtype, and that the message stays under ``max_bytes``."""
    total = sizes[0]
    seen: set[str] = set()
    for i, d in enumerate(descs):
        if type(d) is not dict or d.keys() != _DESC_KEYS:
            raise WireError(f"tensor #{i}: descriptor must be a map with {sorted(_DESC_KEYS)}")
        name, dname = d["name"], d["dtype"]
        if type(name) is not str or len(name) > MAX_NAME_LEN:
            _check_str(f"tensor #{i} name", name)
        if name in seen:
            raise WireError(f"duplicate tensor name {name!r}")
        seen.add(name)
        if type(dname) is not str or dname not in DTYPES:
            raise WireError(f"tensor {name!r}: dtype {dname!r} not allowed")
        nbytes = _numel(d["shape"], name, max_bytes) * _ITEMSIZE[dname]
        total += nbytes
        if total > max_bytes:
            raise WireError(f"message over the size cap of {max_bytes} bytes")
        got = sizes[i + 1]
        if got != nbytes:
            raise WireError(
                f"tensor {name!r}: frame has {got} bytes, shape {d['shape']} x {dname} "
                f"needs {nbytes}"
            )


def _tensor(mv: memoryview, private: bool, dname: str, shape: list[int]) -> torch.Tensor:
    """A tensor over the frame's bytes: wrapped when private, writable, large and aligned to
    the itemsize, else copied."""
    arr: np.ndarray = np.frombuffer(mv, dtype=_NUMPY[dname])
    if not (private and mv.nbytes >= ZEROCOPY_MIN_BYTES and not mv.readonly
            and arr.flags.aligned):
        arr = arr.copy()  # numpy allocations are aligned and writable
    if dname == "bool" and arr.size and int(arr.view(np.uint8).max()) > 1:
        raise WireError("bool tensor holds bytes other than 0 and 1")
    t = torch.from_numpy(arr.reshape(shape))
    return t.view(torch.bfloat16) if dname == "bfloat16" else t


def decode(
    frames: Sequence[bytes | zmq.Frame | memoryview],
    *,
    known_senders: Container[str] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Message:
    """Check and rebuild a Message; raise WireError naming the first problem found.

    Every size is checked against the header and ``max_bytes`` before any tensor is
    allocated. Received ``zmq.Frame`` objects are taken over: do not write to them afterwards.
    """
    if isinstance(frames, (bytes, bytearray, memoryview, zmq.Frame)):
        raise WireError("frames must be a sequence of frames, not one buffer")
    bufs = [_buffer(f) for f in frames]
    if not bufs:
        raise WireError("no frames")
    h = _parse_header(bufs[0][0], max_bytes)
    kind, src, run, owner, it, mb, seq = _fields(h, known_senders)
    meta, descs = h["meta"], h["tensors"]
    if type(meta) is not dict:
        raise WireError("meta must be a map")
    if meta:
        _check_plain(meta)
    if type(descs) is not list:
        raise WireError("tensors must be a list")
    if len(descs) > MAX_TENSORS:
        raise WireError(f"more than {MAX_TENSORS} tensors")
    if len(bufs) != 1 + len(descs):
        raise WireError(f"header announces {len(descs)} tensors, got {len(bufs) - 1} frames")
    _check_descriptors(descs, [b[0].nbytes for b in bufs], max_bytes)
    tensors = {d["name"]: _tensor(*buf, d["dtype"], d["shape"])
               for buf, d in zip(bufs[1:], descs)}
    return Message(kind=kind, src=src, owner=owner, iter=it, mb=mb, seq=seq,
                   tensors=tensors, meta=meta, run=run)

