"""Tests for nodes.wire: round trips, ownership, every rejection, and a fuzz."""

from __future__ import annotations

import warnings

import msgpack
import numpy as np
import pytest
import torch
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodes.wire import (
    DTYPES,
    WIRE_VERSION,
    ZEROCOPY_MIN_BYTES,
    Kind,
    Message,
    WireError,
    decode,
    encode,
    message_nbytes,
)

SHAPES = [(), (0,), (3, 0, 2), (1,), (7,), (2, 3, 4), (1, 1, 1, 1, 1)]


def _rand(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    if dtype is torch.bool:
        return torch.rand(shape) > 0.5
    if dtype.is_floating_point:
        return torch.randn(shape).to(dtype)
    return torch.randint(-100 if dtype is not torch.uint8 else 0, 100, shape, dtype=dtype)


def _bytes(frames: list) -> list[bytes]:
    return [bytes(f) for f in frames]


def _header(frames: list) -> dict:
    return msgpack.unpackb(frames[0], raw=False)


def _with_header(frames: list, **changes: object) -> list:
    h = _header(frames)
    h.update(changes)
    return [msgpack.packb(h, use_bin_type=True), *frames[1:]]


def _msg(**tensors: torch.Tensor) -> Message:
    return Message(kind=Kind.ACT, src="owner0", owner=1, iter=2, mb=3, seq=4,
                   tensors=tensors, meta={"t": 1.5, "tags": ["a", None, {"k": True}]}, run="r1")


@pytest.fixture
def pair():
    """A connected PUSH/PULL pair on loopback, closed even when the test fails."""
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    push = ctx.socket(zmq.PUSH)
    try:
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        push.connect(f"tcp://127.0.0.1:{port}")
        yield push, pull
    finally:
        push.close(linger=0)
        pull.close(linger=0)
        ctx.term()


def _transfer(pair, frames: list) -> list[zmq.Frame]:
    push, pull = pair
    push.send_multipart(frames, copy=False)
    assert pull.poll(5000), "nothing received"
    return pull.recv_multipart(copy=False)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("dname", sorted(DTYPES))
def test_round_trip_every_dtype_and_odd_shape(dname: str) -> None:
    dtype = DTYPES[dname]
    tensors = {f"t{i}": _rand(s, dtype) for i, s in enumerate(SHAPES)}
    msg = _msg(**tensors)
    out = decode(_bytes(encode(msg)), known_senders={"owner0"})
    assert (out.kind, out.src, out.owner, out.iter, out.mb, out.seq, out.run) == (
        "ACT", "owner0", 1, 2, 3, 4, "r1")
    assert out.meta == msg.meta
    assert list(out.tensors) == list(tensors)
    for name, t in tensors.items():
        got = out.tensors[name]
        assert got.dtype == dtype and got.shape == t.shape
        assert torch.equal(got, t)


def test_non_contiguous_and_grad_inputs() -> None:
    base = torch.randn(6, 8, requires_grad=True)
    tensors = {
        "transposed": base.t(),
        "strided": base[::2, 1::3],
        "expanded": torch.randn(3, 1).expand(3, 5),
        "channels_last": torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last),
        "grad": base * 2,
    }
    out = decode(_bytes(encode(_msg(**tensors))))
    for name, t in tensors.items():
        assert torch.equal(out.tensors[name], t.detach()), name
        assert out.tensors[name].is_contiguous()
        assert not out.tensors[name].requires_grad


def test_large_tensor_through_zmq_zero_copy(pair) -> None:
    t = torch.randn(3, 1 << 20)  # 12 MiB
    frames = _transfer(pair, encode(_msg(x=t)))
    out = decode(frames)
    got = out.tensors["x"]
    assert torch.equal(got, t)
    frame_ptr = np.frombuffer(frames[1].buffer, dtype=np.uint8).ctypes.data
    assert got.data_ptr() == frame_ptr, "a large received frame is wrapped, not copied"
    got.add_(1.0)  # writable, and writing is safe: the frame is private to this message
    assert torch.equal(got, t + 1.0)


def test_small_or_misaligned_frames_are_copied(pair) -> None:
    t = torch.arange(10, dtype=torch.float64)
    frames = _transfer(pair, encode(_msg(x=t)))
    got = decode(frames).tensors["x"]
    assert got.nbytes < ZEROCOPY_MIN_BYTES
    assert got.data_ptr() != np.frombuffer(frames[1].buffer, dtype=np.uint8).ctypes.data
    assert torch.equal(got, t)


def test_decode_of_readonly_bytes_copies_without_warning() -> None:
    t = torch.randn(1 << 16)  # above the zero-copy threshold, but bytes are read-only
    frames = _bytes(encode(_msg(x=t)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = decode(frames).tensors["x"]
    got.mul_(2)  # must not write into the caller's immutable bytes
    assert torch.equal(torch.frombuffer(bytearray(frames[1]), dtype=torch.float32), t)


def test_encode_snapshots_so_later_writes_are_not_sent() -> None:
    t = torch.zeros(1 << 18)
    frames = encode(_msg(x=t))
    t.fill_(7.0)  # the caller reuses its buffer while the message is still queued
    assert torch.equal(decode(_bytes(frames)).tensors["x"], torch.zeros(1 << 18))


def test_encode_without_copy_shares_contiguous_tensors() -> None:
    t = torch.zeros(1 << 10)
    frames = encode(_msg(x=t), copy=False)
    t.fill_(1.0)
    assert torch.equal(decode(_bytes(frames)).tensors["x"], t)


def test_received_tensors_are_independent(pair) -> None:
    t = torch.ones(1 << 17)
    frames = encode(_msg(a=t, b=t))
    out = decode(_transfer(pair, frames))
    out.tensors["a"].zero_()
    assert torch.equal(out.tensors["b"], t)
    assert torch.equal(decode(_bytes(frames)).tensors["a"], t)


def test_message_nbytes_counts_header_and_frames() -> None:
    frames = encode(_msg(x=torch.zeros(100), y=torch.zeros(3, dtype=torch.int64)))
    assert message_nbytes(frames) == len(frames[0]) + 400 + 24


def test_state_dict_round_trip_with_batchnorm() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 16), torch.nn.BatchNorm1d(16),
        torch.nn.Linear(16, 10),
    )
    net(torch.randn(4, 3, 8, 8))  # update running stats and num_batches_tracked
    sd = net.state_dict()
    assert len(sd) >= 20
    msg = Message(kind=Kind.GLOBAL, src="aggregator", tensors=dict(sd))
    out = decode(_bytes(encode(msg))).tensors
    assert list(out) == list(sd)
    nbt = out["1.num_batches_tracked"]
    assert nbt.dim() == 0 and nbt.dtype == torch.int64 and int(nbt) == 1
    for k in sd:
        assert torch.equal(out[k], sd[k]), k
    net.load_state_dict(out, strict=True)


def test_kind_values() -> None:
    assert [k.value for k in Kind] == ["ACT", "GRAD", "PARAMS", "GLOBAL", "CONTROL", "METRICS"]
    out = decode(_bytes(encode(Message(kind="CONTROL", src="a", meta={"type": "stop"}))))
    assert out.kind == Kind.CONTROL == "CONTROL" and str(out.kind) == "CONTROL"


# --------------------------------------------------------------------------- rejections


def _good() -> list[bytes]:
    return _bytes(encode(_msg(x=torch.arange(6, dtype=torch.float32).reshape(2, 3))))


def _reject(frames: list, match: str, **kw: object) -> None:
    with pytest.raises(WireError, match=match):
        decode(frames, **kw)


def test_rejects_unknown_version() -> None:
    _reject(_with_header(_good(), v=WIRE_VERSION + 1), "version")
    _reject(_with_header(_good(), v=True), "version")


def test_rejects_unknown_kind() -> None:
    _reject(_with_header(_good(), kind="PICKLE"), "kind")
    _reject(_with_header(_good(), kind=3), "kind")


@pytest.mark.parametrize("dtype", ["complex64", "float8_e4m3fn", "object", "int16", "", 4])
def test_rejects_dtype_outside_allow_list(dtype: object) -> None:
    frames = _good()
    h = _header(frames)
    h["tensors"][0]["dtype"] = dtype
    _reject([msgpack.packb(h), *frames[1:]], "dtype")


def test_encode_rejects_dtype_outside_allow_list() -> None:
    with pytest.raises(WireError, match="dtype"):
        encode(_msg(x=torch.zeros(2, dtype=torch.complex64)))
    with pytest.raises(WireError, match="dtype"):
        encode(_msg(x=torch.zeros(2, dtype=torch.int16)))


def test_rejects_frame_length_mismatch() -> None:
    frames = _good()
    _reject([frames[0], frames[1][:-1]], "needs 24")
    _reject([frames[0], frames[1] + b"\0"], "needs 24")
    h = _header(frames)
    h["tensors"][0]["shape"] = [3, 3]  # the header lies about the shape
    _reject([msgpack.packb(h), frames[1]], "needs 36")
    h["tensors"][0].update(shape=[2, 3], dtype="float64")  # ... or about the dtype
    _reject([msgpack.packb(h), frames[1]], "needs 48")


def test_rejects_frame_count_mismatch() -> None:
    frames = _good()
    _reject(frames[:1], "announces 1 tensors, got 0")
    _reject([*frames, b""], "announces 1 tensors, got 2")
    _reject([], "no frames")


def test_rejects_over_size_cap_before_allocating(monkeypatch: pytest.MonkeyPatch) -> None:
    frames = _good()
    _reject(frames, "size cap", max_bytes=len(frames[0]) + 23)
    assert decode(frames, max_bytes=len(frames[0]) + 24).tensors["x"].numel() == 6

    def no_alloc(*a: object, **k: object) -> None:
        raise AssertionError("allocated before checking the size cap")

    h = _header(frames)
    h["tensors"][0]["shape"] = [1 << 40, 1 << 40]
    monkeypatch.setattr(torch, "empty", no_alloc)
    monkeypatch.setattr(torch, "frombuffer", no_alloc)
    _reject([msgpack.packb(h), frames[1]], "size cap")
    h["tensors"][0]["shape"] = [1 << 20, 1 << 20, 1 << 20, 1 << 20, 1 << 20]
    _reject([msgpack.packb(h), frames[1]], "size cap")
    _reject([b"\x00" * 2000, b""], "header of 2000 bytes over the cap", max_bytes=1000)


def test_rejects_unknown_sender() -> None:
    _reject(_good(), "unknown sender 'owner0'", known_senders={"owner1", "aggregator"})
    assert decode(_good(), known_senders={"owner0"}).src == "owner0"


@pytest.mark.parametrize("header", [
    b"", b"\xc1", b"\x93\x01\x02\x03", b"\x01", msgpack.packb("a map?"), msgpack.packb(None),
    msgpack.packb({1: 2}), msgpack.packb({"v": 1}), b"\x81\xa1v\x01trailing",
    b"\xdd\xff\xff\xff\xff",
])
def test_rejects_header_that_is_not_a_map(header: bytes) -> None:
    _reject([header, _good()[1]], "header")


@pytest.mark.parametrize("field,value,match", [
    ("owner", "1", "owner must be an int"),
    ("iter", 1.0, "iter must be an int"),
    ("mb", True, "mb must be an int"),
    ("seq", -1, "seq=-1 out of range"),
    ("owner", -2, "owner=-2 out of range"),
    ("src", 5, "src must be a str"),
    ("src", "x" * 5000, "src longer"),
    ("run", None, "run must be a str"),
    ("meta", [1, 2], "meta must be a map"),
    ("meta", {"t": msgpack.Timestamp(1)}, "not plain data"),
    ("meta", {"e": msgpack.ExtType(5, b"x")}, "not plain data"),
    ("meta", {"b": b"raw bytes"}, "not plain data"),
    ("tensors", {"x": 1}, "tensors must be a list"),
    ("extra", 1, "unexpected"),
])
def test_rejects_badly_typed_header_fields(field: str, value: object, match: str) -> None:
    _reject(_with_header(_good(), **{field: value}), match)


def test_rejects_missing_header_field() -> None:
    frames = _good()
    h = _header(frames)
    del h["seq"]
    _reject([msgpack.packb(h), frames[1]], "missing \\['seq'\\]")


def test_rejects_deeply_nested_meta() -> None:
    deep: object = 1
    for _ in range(40):
        deep = [deep]
    _reject(_with_header(_good(), meta={"d": deep}), "nested deeper")
    with pytest.raises(WireError, match="nested deeper"):
        encode(Message(kind="CONTROL", src="a", meta={"d": deep}))


@pytest.mark.parametrize("desc,match", [
    ({"name": "x", "dtype": "float32", "shape": [-2, -3]}, "bad dimension"),
    ({"name": "x", "dtype": "float32", "shape": [6.0]}, "bad dimension"),
    ({"name": "x", "dtype": "float32", "shape": [True] * 6}, "bad dimension"),
    ({"name": "x", "dtype": "float32", "shape": "6"}, "shape must be a list"),
    ({"name": "x", "dtype": "float32", "shape": [1] * 33 + [6]}, "dims"),
    ({"name": 7, "dtype": "float32", "shape": [6]}, "name must be a str"),
    ({"name": "x", "dtype": "float32"}, "descriptor"),
    ({"name": "x", "dtype": "float32", "shape": [6], "strides": [1]}, "descriptor"),
    ("x", "descriptor"),
])
def test_rejects_bad_tensor_descriptor(desc: object, match: str) -> None:
    frames = _good()
    h = _header(frames)
    h["tensors"] = [desc]
    _reject([msgpack.packb(h), frames[1]], match)


def test_rejects_duplicate_tensor_names() -> None:
    frames = _good()
    h = _header(frames)
    h["tensors"] = [h["tensors"][0], dict(h["tensors"][0])]
    _reject([msgpack.packb(h), frames[1], frames[1]], "duplicate tensor name 'x'")


def test_rejects_invalid_bool_bytes() -> None:
    frames = _bytes(encode(_msg(m=torch.tensor([True, False, True]))))
    _reject([frames[0], b"\x01\x02\x00"], "bool")


def test_rejects_non_buffer_frames() -> None:
    _reject([_good()[0], 12345], "not a contiguous byte buffer")
    _reject(b"just bytes", "sequence")  # type: ignore[arg-type]


def test_encode_rejects_bad_messages() -> None:
    with pytest.raises(WireError, match="kind"):
        encode(Message(kind="NOPE", src="a"))
    with pytest.raises(WireError, match="not plain data"):
        encode(Message(kind="ACT", src="a", meta={"f": object()}))
    with pytest.raises(WireError, match="key"):
        encode(Message(kind="ACT", src="a", meta={1: "int key"}))
    with pytest.raises(WireError, match="seq"):
        encode(Message(kind="ACT", src="a", seq=-5))
    with pytest.raises(WireError, match="torch.Tensor"):
        encode(Message(kind="ACT", src="a", tensors={"x": np.zeros(3)}))  # type: ignore[dict-item]
    with pytest.raises(WireError, match="layout"):
        encode(Message(kind="ACT", src="a", tensors={"x": torch.eye(3).to_sparse()}))


# --------------------------------------------------------------------------- fuzz

FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=4), kids,
                                                             max_size=4),
    max_leaves=12,
)


def _decode_or_wire_error(frames: list) -> None:
    try:
        out = decode(frames, max_bytes=1 << 20)
    except WireError:
        return
    assert isinstance(out, Message)
    for t, f in zip(out.tensors.values(), frames[1:]):
        assert t.nbytes == len(f)


@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=5))
def test_fuzz_random_bytes(frames: list[bytes]) -> None:
    _decode_or_wire_error(frames)


@st.composite
def valid_frames(draw: st.DrawFn) -> tuple[Message, list[bytes]]:
    names = draw(st.lists(st.text(min_size=1, max_size=5), max_size=3, unique=True))
    tensors = {}
    for name in names:
        dtype = DTYPES[draw(st.sampled_from(sorted(DTYPES)))]
        shape = tuple(draw(st.lists(st.integers(0, 3), max_size=3)))
        tensors[name] = _rand(shape, dtype)
    msg = Message(kind=draw(st.sampled_from(list(Kind))), src="s", seq=draw(st.integers(0, 9)),
                  tensors=tensors, meta={"n": draw(st.integers(-5, 5)), "s": draw(st.text())})
    return msg, _bytes(encode(msg))


@FUZZ
@given(valid_frames(), st.data())
def test_fuzz_mutated_messages(case: tuple[Message, list[bytes]], data: st.DataObject) -> None:
    msg, frames = case
    how = data.draw(st.sampled_from(["none", "truncate", "drop", "extra", "flip", "field",
                                     "shape", "dtype"]))
    h = _header(frames)
    if how == "none":
        out = decode(frames)
        for k, t in msg.tensors.items():
            assert torch.equal(out.tensors[k], t)
        return
    if how == "truncate":
        i = data.draw(st.integers(0, len(frames) - 1))
        frames[i] = frames[i][: data.draw(st.integers(0, max(0, len(frames[i]) - 1)))]
    elif how == "drop":
        del frames[data.draw(st.integers(0, len(frames) - 1))]
    elif how == "extra":
        frames.append(data.draw(st.binary(max_size=16)))
    elif how == "flip":
        b = bytearray(frames[0])
        i = data.draw(st.integers(0, len(b) - 1))
        b[i] ^= data.draw(st.integers(1, 255))
        frames[0] = bytes(b)
    elif how == "field":
        h[data.draw(st.sampled_from(sorted(h)))] = data.draw(plain)
        frames[0] = msgpack.packb(h, use_bin_type=True)
    elif h["tensors"]:
        d = data.draw(st.sampled_from(h["tensors"]))
        if how == "shape":
            d["shape"] = data.draw(st.lists(st.integers(-(2**63), 2**64 - 1) | plain,
                                            max_size=5))
        else:
            d["dtype"] = data.draw(st.sampled_from(sorted(DTYPES)) | plain)
        frames[0] = msgpack.packb(h, use_bin_type=True)
    if data.draw(st.booleans()):
        frames = [zmq.Frame(f) for f in frames]
    _decode_or_wire_error(frames)


@FUZZ
@given(st.dictionaries(st.sampled_from(["v", "kind", "run", "src", "owner", "iter", "mb", "seq",
                                        "tensors", "meta"]), plain),
       st.lists(st.binary(max_size=16), max_size=3))
def test_fuzz_arbitrary_headers(header: dict, rest: list[bytes]) -> None:
    _decode_or_wire_error([msgpack.packb(header, use_bin_type=True), *rest])
