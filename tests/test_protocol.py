"""The wire protocol without sockets: both sessions paired in memory."""

import struct
import tracemalloc
import zlib

import msgpack
import numpy as np
import pytest

from fraktal.errors import AuthenticationError, FrameTooLarge, ProtocolError
from fraktal.protocol.codec import SHUFFLE_ZLIB, decode_tile, encode_tile
from fraktal.protocol.framing import FrameReader, encode_frame
from fraktal.protocol.messages import (
    MASTER_MESSAGES,
    MAX_TILES_PER_CHUNK,
    WORKER_MESSAGES,
    Assign,
    Drop,
    Error,
    Heartbeat,
    Hello,
    Join,
    Release,
    Result,
    TileData,
    TileFailure,
    Welcome,
    decode,
    encode,
)
from fraktal.protocol.session import (
    HANDSHAKE_MAX_FRAME,
    MasterSession,
    State,
    WorkerSession,
    join_mac,
)
from fraktal.render.compute import compute_rect
from fraktal.render.spec import make_spec
from fraktal.render.tiles import Rect

SPEC = make_spec(
    width=100,
    height=60,
    center_re=-0.5,
    center_im=0.25,
    span=2.0,
    max_iter=200,
    tile_size=16,
)
MESSAGES = [
    (Hello(b"n" * 32, True), MASTER_MESSAGES),
    (Welcome("w7", 2.0), MASTER_MESSAGES),
    (Assign(12, "abc123", SPEC, (0, 5, 9), 30.0), MASTER_MESSAGES),
    (Drop("abc123"), MASTER_MESSAGES),
    (Error("bad thing"), MASTER_MESSAGES),
    (Join("box-1", "box", 4, b"m" * 32), WORKER_MESSAGES),
    (
        Result(12, (TileData(0, b"\x01abc"),), (TileFailure(5, "died"),), 1.5, 99),
        WORKER_MESSAGES,
    ),
    (Heartbeat(3), WORKER_MESSAGES),
    (Release((1, 2), True), WORKER_MESSAGES),
    (Error("bad thing"), WORKER_MESSAGES),
]


@pytest.mark.parametrize(
    ("message", "allowed"),
    MESSAGES,
    ids=[f"{m.TYPE}-{i}" for i, (m, _) in enumerate(MESSAGES)],
)
def test_every_message_round_trips(message, allowed):
    assert decode(encode(message), allowed) == message


def handshake(master_token, worker_token, name="box-1"):
    master = MasterSession(master_token)
    worker = WorkerSession(worker_token, name, "box", 2)
    assert worker.receive(master.hello()) == []
    joined = master.receive(worker.data_to_send())
    return master, worker, joined


def test_handshake_with_token_proves_it_without_sending_it():
    master, worker, joined = handshake("s3cret", "s3cret")

    assert [type(m) for m in joined] == [Join]
    assert master.state is State.ACTIVE
    assert b"s3cret" not in master.hello() and b"s3cret" not in encode(joined[0])
    welcome = worker.receive(master.send(Welcome("w1", 2.0)))
    assert welcome == [Welcome("w1", 2.0)] and worker.state is State.ACTIVE


def test_wrong_token_is_refused():
    with pytest.raises(AuthenticationError, match="did not prove the master's token"):
        handshake("s3cret", "guess")


def test_missing_token_is_refused_on_both_sides():
    master = MasterSession("s3cret")
    worker = WorkerSession(None, "box-1", "box", 2)
    with pytest.raises(AuthenticationError, match="requires a token"):
        worker.receive(master.hello())

    master = MasterSession("s3cret")
    join = Join("box-1", "box", 2, b"")
    with pytest.raises(AuthenticationError, match="requires a token"):
        master.receive(encode_frame(encode(join)))


def test_replayed_join_from_another_connection_is_refused():
    _, _, (recorded,) = handshake("s3cret", "s3cret")
    fresh = MasterSession("s3cret")
    with pytest.raises(AuthenticationError):
        fresh.receive(encode_frame(encode(recorded)))


def test_mac_binds_the_worker_name():
    nonce = b"x" * 32
    assert join_mac("t", nonce, "a") != join_mac("t", nonce, "b")


def test_master_without_token_accepts_workers():
    _, _, joined = handshake(None, None)
    assert joined[0].mac == b""


@pytest.mark.parametrize("message", [Result(1, (), (), 0.0, 0), Heartbeat(0)])
def test_work_messages_before_join_are_refused(message):
    master = MasterSession(None)
    with pytest.raises(ProtocolError, match="not allowed in state 'await join'"):
        master.receive(encode_frame(encode(message)))


def test_second_join_is_refused():
    master, _worker, _ = handshake(None, None)
    with pytest.raises(ProtocolError, match="join message is not allowed"):
        master.receive(encode_frame(encode(Join("x", "y", 1, b""))))


def test_master_refuses_messages_only_a_master_sends():
    master, _, _ = handshake(None, None)
    with pytest.raises(ProtocolError, match="'assign' is not one this side accepts"):
        master.receive(encode_frame(encode(Assign(1, "j", SPEC, (0,), 1.0))))


def test_frames_cut_anywhere_reassemble():
    frames = b"".join(encode_frame(encode(Heartbeat(i))) for i in range(5))
    master, _, _ = handshake(None, None)
    received = []
    for i in range(0, len(frames), 3):
        received += master.receive(frames[i : i + 3])
    assert received == [Heartbeat(i) for i in range(5)]


def test_oversized_length_prefix_is_refused_before_the_body_arrives():
    reader = FrameReader(max_frame=1024)
    with pytest.raises(FrameTooLarge, match="4294967295 exceeds the limit of 1024"):
        reader.feed(b"\xff\xff\xff\xff")
    assert reader.buffered == 4


def test_zero_length_frame_is_refused():
    with pytest.raises(ProtocolError, match="prefix is 0"):
        FrameReader().feed(b"\x00\x00\x00\x00")


def test_truncated_frame_yields_nothing_yet():
    reader = FrameReader()
    reader.feed(encode_frame(encode(Heartbeat(1)))[:-1])
    assert list(reader.frames()) == []


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"\xc1", "not valid MessagePack"),
        (msgpack.packb([1, 2]), "expected a MessagePack map"),
        (msgpack.packb({"v": 2, "type": "heartbeat", "busy": 1}), "version 2"),
        (msgpack.packb({"type": "heartbeat", "busy": 1}), "version None"),
        (msgpack.packb({"v": 1, "type": "exec", "busy": 1}), "'exec' is not one"),
        (msgpack.packb({"v": 1, "type": "heartbeat"}), "has fields"),
        (msgpack.packb({"v": 1, "type": "heartbeat", "busy": 1, "x": 0}), "has fields"),
        (
            msgpack.packb({"v": 1, "type": "heartbeat", "busy": 1, b"x": 0}),
            "has fields",
        ),
        (
            msgpack.packb({"v": 1, "type": "heartbeat", "busy": "1"}),
            "must be an integer",
        ),
        (
            msgpack.packb({"v": 1, "type": "heartbeat", "busy": True}),
            "must be an integer",
        ),
        (msgpack.packb({"v": 1, "type": "heartbeat", "busy": -1}), "must be in"),
        (
            msgpack.packb(
                {"v": 1, "type": "release", "chunks": [1, "x"], "leaving": False}
            ),
            "integer",
        ),
        (
            msgpack.packb(
                {
                    "v": 1,
                    "type": "result",
                    "chunk": 1,
                    "done": [[0]],
                    "failed": [],
                    "compute_seconds": 1.0,
                    "iterations": 1,
                }
            ),
            "pair",
        ),
        (
            msgpack.packb(
                {
                    "v": 1,
                    "type": "result",
                    "chunk": 1,
                    "done": [],
                    "failed": [],
                    "compute_seconds": float("nan"),
                    "iterations": 1,
                }
            ),
            "must be in",
        ),
        (
            msgpack.packb(
                {
                    "v": 1,
                    "type": "result",
                    "chunk": 1,
                    "done": [[3, b"a"], [3, b"b"]],
                    "failed": [],
                    "compute_seconds": 1.0,
                    "iterations": 1,
                }
            ),
            "more than once",
        ),
        (
            msgpack.packb(
                {
                    "v": 1,
                    "type": "result",
                    "chunk": 1,
                    "done": [[3, "text"]],
                    "failed": [],
                    "compute_seconds": 1.0,
                    "iterations": 1,
                }
            ),
            "raw bytes",
        ),
        (
            msgpack.packb(
                {
                    "v": 1,
                    "type": "join",
                    "name": "n",
                    "host": "h",
                    "processes": 1,
                    "mac": b"short",
                }
            ),
            "32 raw bytes",
        ),
        (
            msgpack.packb(
                {
                    "v": 1,
                    "type": "join",
                    "name": "n" * 500,
                    "host": "h",
                    "processes": 1,
                    "mac": b"",
                }
            ),
            "at most 128",
        ),
        (
            msgpack.packb(
                {"v": 1, "type": "heartbeat", "busy": msgpack.ExtType(5, b"x")}
            ),
            "not valid MessagePack|must be an integer",
        ),
    ],
)
def test_hostile_bodies_give_a_protocol_error(body, match):
    with pytest.raises(ProtocolError, match=match):
        decode(body, WORKER_MESSAGES)


@pytest.mark.parametrize(
    ("spec_change", "match"),
    [
        ({"width": 0}, "width must be from 1"),
        ({"span": -1.0}, "span must be"),
        ({"max_iter": "9"}, "max-iter must be a whole number"),
    ],
)
def test_assign_with_bad_render_parameters_is_refused(spec_change, match):
    wire = Assign(1, "job", SPEC, (0,), 30.0).to_wire()
    wire["spec"].update(spec_change)
    body = msgpack.packb({"v": 1, "type": "assign", **wire})
    with pytest.raises(ProtocolError, match=match):
        decode(body, MASTER_MESSAGES)


def test_assign_naming_a_tile_outside_the_grid_is_refused():
    wire = Assign(1, "job", SPEC, (0,), 30.0).to_wire()
    wire["tiles"] = [0, SPEC.grid.count]
    body = msgpack.packb({"v": 1, "type": "assign", **wire})
    with pytest.raises(ProtocolError, match=f"outside the job's {SPEC.grid.count}"):
        decode(body, MASTER_MESSAGES)


def test_tile_codec_round_trips_exact_values():
    values = np.array([[-1.0, 0.0, 3.25], [999.5, 12.0, -1.0]], dtype=np.float32)
    decoded = decode_tile(encode_tile(values), 2, 3, max_iter=1000)
    assert decoded.dtype == np.float32 and np.array_equal(decoded, values)


def test_tile_codec_round_trips_a_computed_tile_of_every_shape():
    spec = make_spec(width=150, height=90, max_iter=300)
    for rect in (Rect(0, 0, 150, 90), Rect(3, 7, 1, 40), Rect(5, 5, 61, 1)):
        values, _ = compute_rect(spec, rect)
        decoded = decode_tile(encode_tile(values), rect.height, rect.width, 300)
        assert decoded.tobytes() == values.tobytes()


def test_tile_codec_sends_a_smooth_tile_in_under_a_byte_per_pixel():
    # A tile near the set's edge in a 1024-pixel view: counts from 5 to 1000.
    spec = make_spec(width=1024, height=1024, center_re=-0.5, span=3.0)
    values, _ = compute_rect(spec, Rect(320, 256, 64, 64))
    planes = values.astype("<f4").view(np.uint8).reshape(-1, 4).T.tobytes()

    assert len(encode_tile(values)) < values.size
    assert len(encode_tile(values)) < 0.5 * len(zlib.compress(planes, 1))


def test_tiles_of_the_plain_shuffle_codec_still_decode():
    values = np.array([[-1.0, 0.0, 3.25], [999.5, 12.0, -1.0]], dtype=np.float32)
    planes = values.astype("<f4").view(np.uint8).reshape(-1, 4).T.tobytes()
    blob = bytes([SHUFFLE_ZLIB]) + zlib.compress(planes)

    assert np.array_equal(decode_tile(blob, 2, 3, max_iter=1000), values)


@pytest.mark.parametrize(
    ("blob", "match"),
    [
        (b"", "codec tag None"),
        (b"\x07abc", "codec tag 7"),
        (b"\x01not zlib", "not valid zlib"),
        (encode_tile(np.zeros((2, 2), np.float32)), "exactly 2x3"),
        (encode_tile(np.zeros((4, 3), np.float32)), "exactly 2x3"),
        (encode_tile(np.full((2, 3), np.nan, np.float32)), "impossible"),
        (encode_tile(np.full((2, 3), np.inf, np.float32)), "impossible"),
        (encode_tile(np.full((2, 3), -0.5, np.float32)), "impossible"),
        (encode_tile(np.full((2, 3), 5000.0, np.float32)), "impossible"),
        (encode_tile(np.zeros((2, 3), np.float32)) + b"trailing", "exactly 2x3"),
    ],
)
def test_bad_tile_data_is_refused(blob, match):
    with pytest.raises(ProtocolError, match=match):
        decode_tile(blob, 2, 3, max_iter=1000)


@pytest.mark.parametrize(
    "bad", [np.nan, -np.nan, np.inf, -np.inf, -0.5, -2.0, 1001.5, -1e-45]
)
@pytest.mark.parametrize("interior", [False, True])
def test_one_impossible_value_among_legal_ones_is_refused(bad, interior):
    values = np.array([[0.0, 3.25, 1001.0], [999.5, 12.0, 7.0]], dtype=np.float32)
    if interior:
        values[0, 0] = -1.0
    values[1, 1] = bad

    with pytest.raises(ProtocolError, match="impossible"):
        decode_tile(encode_tile(values), 2, 3, max_iter=1000)


def test_compression_bomb_is_never_inflated_past_the_tile_size():
    bomb = b"\x01" + zlib.compress(b"\x00" * (256 * 1024 * 1024), 9)
    assert len(bomb) < 300_000
    with pytest.raises(ProtocolError, match="exactly 8x8"):
        decode_tile(bomb, 8, 8, max_iter=10)


def test_session_tells_how_much_of_a_frame_is_still_missing_its_end():
    master, _, _ = handshake(None, None)
    frame = encode_frame(encode(Heartbeat(1)))

    assert master.receive(frame[:-2]) == []
    assert master.buffered == len(frame) - 2
    assert master.receive(frame[-2:]) == [Heartbeat(1)]
    assert master.buffered == 0
    assert master.receive(frame[:4]) == []  # a length prefix alone
    assert master.buffered == 4


@pytest.mark.parametrize("version", [True, 1.0, "1", [1]])
def test_version_must_be_the_integer_1_not_something_equal_to_it(version):
    body = msgpack.packb({"v": version, "type": "heartbeat", "busy": 1})

    with pytest.raises(ProtocolError, match=r"version .* is not supported"):
        decode(body, WORKER_MESSAGES)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (list(range(65_537)), "max_array_len"),
        ({str(i): i for i in range(33)}, "max_map_len"),
        ("x" * 4001, "max_str_len"),
    ],
)
def test_unpacker_refuses_containers_longer_than_any_message(value, match):
    body = msgpack.packb({"v": 1, "type": "heartbeat", "busy": value})

    with pytest.raises(ProtocolError, match=match):
        decode(body, WORKER_MESSAGES)


def nested_empty_arrays(size: int) -> bytes:
    """A map whose one value is arrays of 65,536 empty arrays: one byte each
    on the wire, a new list object of about 60 bytes each once unpacked."""
    inner = b"\xdd" + (65_536).to_bytes(4, "big") + b"\x90" * 65_536
    count = (size - 64) // len(inner)
    outer = b"\xdd" + count.to_bytes(4, "big") + inner * count
    return b"\x81" + msgpack.packb("busy") + outer


def test_a_frame_that_would_unpack_into_gigabytes_is_refused_early():
    body = nested_empty_arrays(64 * 2**20)  # the frame limit after joining

    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError, match="more than 524288 values"):
            decode(body, WORKER_MESSAGES)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20  # it built about 4.6 GiB before


def test_the_largest_result_a_chunk_can_have_still_unpacks():
    done = tuple(TileData(t, b"x") for t in range(MAX_TILES_PER_CHUNK))
    failed = tuple(TileFailure(t, "died") for t in range(MAX_TILES_PER_CHUNK, 2**17))
    result = Result(2**53, done, failed, 1.0, 2**63 - 1)

    assert decode(encode(result), WORKER_MESSAGES) == result


def test_frames_before_the_handshake_are_limited_to_a_few_kilobytes():
    master = MasterSession(None)
    big_join = Join("x" * 128, "h" * 128, 1, b"")
    assert len(encode(big_join)) < HANDSHAKE_MAX_FRAME

    with pytest.raises(FrameTooLarge, match="limit of 8192"):
        master.receive(struct.pack(">I", HANDSHAKE_MAX_FRAME + 1))


def test_full_frame_limit_applies_from_the_first_frame_after_the_handshake():
    master = MasterSession(None)
    worker = WorkerSession(None, "box", "box", 4096)
    worker.receive(master.hello())
    big = make_spec(width=4096, height=4096, tile_size=64)
    assign = Assign(1, "job", big, tuple(range(4096)), 30.0)
    frames = master.send(Welcome("w1", 2.0)) + master.send(assign)
    assert len(master.send(assign)) > HANDSHAKE_MAX_FRAME

    assert worker.receive(frames) == [Welcome("w1", 2.0), assign]
    big_release = Release(tuple(range(5000)), False)
    master.receive(worker.data_to_send())
    assert master.receive(encode_frame(encode(big_release))) == [big_release]
