"""The messages of the worker protocol and their validation.

Every frame body is a MessagePack map with the protocol version under ``"v"``
and the message name under ``"type"``. Decoding checks everything before any
other code sees the message: the version, that the type is one this side may
receive, that the set of keys is exactly the expected one, and the type and
range of every field. A frame from the network is data; nothing in it is ever
executed or used to build objects other than the ones below. The unpacker
itself refuses strings, lists and maps longer than any message can hold, so a
hostile frame cannot make it build them first.

Master to worker: `Hello`, `Welcome`, `Assign`, `Drop`, `Error`.
Worker to master: `Join`, `Result`, `Heartbeat`, `Release`, `Error`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import msgpack

from fraktal.errors import ProtocolError, UsageError
from fraktal.render.spec import RenderSpec

PROTOCOL_VERSION = 1
NONCE_BYTES = 32
MAC_BYTES = 32
MAX_NAME = 128
MAX_TEXT = 1000
MAX_TILES_PER_CHUNK = 65_536
MAX_STR_BYTES = 4 * MAX_TEXT  # UTF-8 takes up to 4 bytes a character
MAX_MAP_KEYS = 32
# A result of 2 x MAX_TILES_PER_CHUNK tiles (done and failed) is the largest
# message: 3 values a tile (its pair and the pair's two), and room to spare.
MAX_VALUES = 8 * MAX_TILES_PER_CHUNK
MAX_ID = 2**53
MAX_SECONDS = 1e7
_JOB_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True)
class Message:
    """Base class: a message knows its wire name and its fields."""

    TYPE: ClassVar[str] = ""

    def to_wire(self) -> dict[str, Any]:
        """The fields as plain MessagePack-able values."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Hello(Message):
    """First frame from the master: a fresh nonce to prove the token against."""

    TYPE: ClassVar[str] = "hello"
    nonce: bytes
    auth_required: bool


@dataclass(frozen=True)
class Join(Message):
    """The worker's answer to `Hello`: who it is, and the HMAC of the nonce."""

    TYPE: ClassVar[str] = "join"
    name: str
    host: str
    processes: int
    mac: bytes


@dataclass(frozen=True)
class Welcome(Message):
    """The master accepted the worker; heartbeats are due this often."""

    TYPE: ClassVar[str] = "welcome"
    worker_id: str
    heartbeat_interval: float


@dataclass(frozen=True)
class Assign(Message):
    """A chunk: tiles of one job leased to the worker until the lease ends."""

    TYPE: ClassVar[str] = "assign"
    chunk: int
    job: str
    spec: RenderSpec
    tiles: tuple[int, ...]
    lease_seconds: float

    def to_wire(self) -> dict[str, Any]:
        return {
            "chunk": self.chunk,
            "job": self.job,
            "spec": self.spec.to_dict(),
            "tiles": list(self.tiles),
            "lease_seconds": self.lease_seconds,
        }


@dataclass(frozen=True)
class TileData:
    """One computed tile: its id and its values encoded by `codec.encode_tile`."""

    tile: int
    data: bytes


@dataclass(frozen=True)
class TileFailure:
    """A tile the worker could not compute, and why."""

    tile: int
    reason: str


@dataclass(frozen=True)
class Result(Message):
    """Everything a worker has to say about one chunk it was assigned."""

    TYPE: ClassVar[str] = "result"
    chunk: int
    done: tuple[TileData, ...]
    failed: tuple[TileFailure, ...]
    compute_seconds: float
    iterations: int

    def to_wire(self) -> dict[str, Any]:
        return {
            "chunk": self.chunk,
            "done": [[t.tile, t.data] for t in self.done],
            "failed": [[t.tile, t.reason] for t in self.failed],
            "compute_seconds": self.compute_seconds,
            "iterations": self.iterations,
        }


@dataclass(frozen=True)
class Heartbeat(Message):
    """The worker is alive; ``busy`` tiles are being computed right now."""

    TYPE: ClassVar[str] = "heartbeat"
    busy: int


@dataclass(frozen=True)
class Release(Message):
    """The worker hands these chunks back unfinished; ``leaving`` says goodbye."""

    TYPE: ClassVar[str] = "release"
    chunks: tuple[int, ...]
    leaving: bool

    def to_wire(self) -> dict[str, Any]:
        return {"chunks": list(self.chunks), "leaving": self.leaving}


@dataclass(frozen=True)
class Drop(Message):
    """The job ended or was cancelled: forget its chunks that are not done."""

    TYPE: ClassVar[str] = "drop"
    job: str


@dataclass(frozen=True)
class Error(Message):
    """The sender saw a fault; it closes the connection after this frame."""

    TYPE: ClassVar[str] = "error"
    message: str


MASTER_MESSAGES: dict[str, type[Message]] = {
    m.TYPE: m for m in (Hello, Welcome, Assign, Drop, Error)
}
WORKER_MESSAGES: dict[str, type[Message]] = {
    m.TYPE: m for m in (Join, Result, Heartbeat, Release, Error)
}


def encode(message: Message) -> bytes:
    """The frame body for ``message``."""
    body = {"v": PROTOCOL_VERSION, "type": message.TYPE, **message.to_wire()}
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


def decode(body: bytes, allowed: dict[str, type[Message]]) -> Message:
    """Parse and check one frame body; raise `ProtocolError` on any fault."""
    data = _unpack(body)
    version = data.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {version!r} is not supported; this side speaks "
            f"version {PROTOCOL_VERSION}"
        )
    kind = data.get("type")
    cls = allowed.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(
            f"message type {kind!r} is not one this side accepts; expected one "
            f"of {sorted(allowed)}"
        )
    if data.keys() != _KEYS[cls]:
        raise ProtocolError(
            f"{kind} message has fields "
            f"{sorted(data.keys() - _ENVELOPE, key=repr)}, "
            f"expected {sorted(_KEYS[cls] - _ENVELOPE)}"
        )
    message: Message = _PARSERS[cls](data)
    return message


def _unpack(body: bytes) -> dict[str, Any]:
    budget = _Budget()
    try:
        data = msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_ext_len=0,
            max_str_len=MAX_STR_BYTES,
            max_array_len=MAX_TILES_PER_CHUNK,
            max_map_len=MAX_MAP_KEYS,
            list_hook=budget.take,
            object_hook=budget.take,
        )
    except ProtocolError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"frame is not valid MessagePack: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError(
            f"frame holds a {type(data).__name__}, expected a MessagePack map"
        )
    return data


class _Budget:
    """Counts the values of the arrays and maps of a frame as they are built.

    Each container is bounded by the unpacker, but not how many there are: a
    64 MiB frame of empty arrays would become gigabytes of lists. No message
    holds more than `MAX_VALUES`, so a frame stops there, having built at
    most one container more.
    """

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_VALUES

    def take(self, container: Any) -> Any:
        # Each value is counted once, by its container; a container's own
        # values were built (and counted, if containers) before it.
        self.left -= len(container)
        if self.left < 0:
            raise ProtocolError(
                f"frame unpacks into more than {MAX_VALUES} values, more than "
                f"any message holds"
            )
        return container


def _int(d: dict[str, Any], key: str, low: int, high: int) -> int:
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"field {key!r} must be an integer, got {value!r:.80}")
    if not low <= value <= high:
        raise ProtocolError(f"field {key!r} must be in {low}..{high}, got {value}")
    return value


def _float(d: dict[str, Any], key: str, low: float, high: float) -> float:
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError(f"field {key!r} must be a number, got {value!r:.80}")
    if not (math.isfinite(value) and low <= value <= high):
        raise ProtocolError(f"field {key!r} must be in {low}..{high}, got {value}")
    return float(value)


def _text(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise ProtocolError(f"{what} must be text of at most {limit} characters")
    return value


def _bytes(d: dict[str, Any], key: str, sizes: tuple[int, ...]) -> bytes:
    value = d[key]
    if not isinstance(value, bytes) or len(value) not in sizes:
        raise ProtocolError(
            f"field {key!r} must be {' or '.join(map(str, sizes))} raw bytes"
        )
    return value


def _list(d: dict[str, Any], key: str, limit: int) -> list[Any]:
    value = d[key]
    if not isinstance(value, list) or len(value) > limit:
        raise ProtocolError(f"field {key!r} must be a list of at most {limit} items")
    return value


def _tile_id(value: Any) -> int:
    return _id(value, "tile id")


def _id(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_ID:
        raise ProtocolError(f"{what} must be an integer >= 0, got {value!r:.80}")
    return value


def _pair(value: Any) -> list[Any]:
    if not isinstance(value, list) or len(value) != 2:
        raise ProtocolError("each tile entry must be a pair [tile, value]")
    return value


def _parse_hello(d: dict[str, Any]) -> Hello:
    return Hello(_bytes(d, "nonce", (NONCE_BYTES,)), _bool(d, "auth_required"))


def _parse_join(d: dict[str, Any]) -> Join:
    return Join(
        name=_text(d["name"], "field 'name'", MAX_NAME),
        host=_text(d["host"], "field 'host'", MAX_NAME),
        processes=_int(d, "processes", 1, 4096),
        mac=_bytes(d, "mac", (0, MAC_BYTES)),
    )


def _parse_welcome(d: dict[str, Any]) -> Welcome:
    return Welcome(
        worker_id=_text(d["worker_id"], "field 'worker_id'", MAX_NAME),
        heartbeat_interval=_float(d, "heartbeat_interval", 0.05, 3600),
    )


def _parse_assign(d: dict[str, Any]) -> Assign:
    job = _job_id(d)
    if not isinstance(d["spec"], dict):
        raise ProtocolError("field 'spec' must be a map of render parameters")
    try:
        spec = RenderSpec.from_dict(d["spec"])
    except UsageError as exc:
        raise ProtocolError(f"field 'spec' is invalid: {exc}") from None
    tiles = tuple(_tile_id(t) for t in _list(d, "tiles", MAX_TILES_PER_CHUNK))
    if not tiles or len(set(tiles)) != len(tiles):
        raise ProtocolError("field 'tiles' must list distinct tile ids, at least one")
    if max(tiles) >= spec.grid.count:
        raise ProtocolError(
            f"tile id {max(tiles)} is outside the job's {spec.grid.count} tiles"
        )
    return Assign(
        chunk=_int(d, "chunk", 0, MAX_ID),
        job=job,
        spec=spec,
        tiles=tiles,
        lease_seconds=_float(d, "lease_seconds", 0.0, MAX_SECONDS),
    )


def _parse_result(d: dict[str, Any]) -> Result:
    done = tuple(
        TileData(_tile_id(tile), _blob(data))
        for tile, data in map(_pair, _list(d, "done", MAX_TILES_PER_CHUNK))
    )
    failed = tuple(
        TileFailure(_tile_id(tile), _text(reason, "failure reason", MAX_TEXT))
        for tile, reason in map(_pair, _list(d, "failed", MAX_TILES_PER_CHUNK))
    )
    ids = [t.tile for t in done] + [t.tile for t in failed]
    if len(set(ids)) != len(ids):
        raise ProtocolError("a result names the same tile more than once")
    return Result(
        chunk=_int(d, "chunk", 0, MAX_ID),
        done=done,
        failed=failed,
        compute_seconds=_float(d, "compute_seconds", 0.0, MAX_SECONDS),
        iterations=_int(d, "iterations", 0, 2**63 - 1),
    )


def _blob(value: Any) -> bytes:
    if not isinstance(value, bytes):
        raise ProtocolError("tile data must be raw bytes")
    return value


def _parse_heartbeat(d: dict[str, Any]) -> Heartbeat:
    return Heartbeat(busy=_int(d, "busy", 0, 2**20))


def _parse_release(d: dict[str, Any]) -> Release:
    chunks = _list(d, "chunks", MAX_TILES_PER_CHUNK)
    return Release(
        tuple(_id(chunk, "chunk id") for chunk in chunks),
        _bool(d, "leaving"),
    )


def _parse_drop(d: dict[str, Any]) -> Drop:
    return Drop(_job_id(d))


def _job_id(d: dict[str, Any]) -> str:
    job = _text(d["job"], "field 'job'", 64)
    if not _JOB_ID.fullmatch(job):
        raise ProtocolError(f"field 'job' must be a job id, got {job!r}")
    return job


def _bool(d: dict[str, Any], key: str) -> bool:
    if not isinstance(d[key], bool):
        raise ProtocolError(f"field {key!r} must be true or false")
    return bool(d[key])


def _parse_error(d: dict[str, Any]) -> Error:
    return Error(_text(d["message"], "field 'message'", MAX_TEXT))


_ENVELOPE = frozenset({"v", "type"})
# Every key a frame of each type carries; parsers read only the fields.
_KEYS: dict[type[Message], frozenset[str]] = {
    cls: _ENVELOPE | {f.name for f in fields(cls)}
    for cls in (*MASTER_MESSAGES.values(), *WORKER_MESSAGES.values())
}
_PARSERS: dict[type[Message], Any] = {
    Hello: _parse_hello,
    Join: _parse_join,
    Welcome: _parse_welcome,
    Assign: _parse_assign,
    Result: _parse_result,
    Heartbeat: _parse_heartbeat,
    Release: _parse_release,
    Drop: _parse_drop,
    Error: _parse_error,
}
