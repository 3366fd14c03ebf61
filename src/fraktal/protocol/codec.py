"""How a tile's float32 values travel: a tag byte, then zlib over byte planes.

Neighbouring smooth iteration counts share their sign, exponent and high
mantissa bytes; writing the first byte of every value, then the second, and so
on (a byte shuffle) puts those equal bytes next to each other, where zlib finds
them. Decoding never inflates more than the tile can hold, so a small hostile
blob cannot expand into gigabytes, and it checks every value is one a kernel
can produce.
"""

from __future__ import annotations

import zlib

import numpy as np

from fraktal.errors import ProtocolError

SHUFFLE_ZLIB = 1
ZLIB_LEVEL = 1
INTERIOR = -1.0


def encode_tile(values: np.ndarray) -> bytes:
    """Encode a float32 array for the wire."""
    planes = np.ascontiguousarray(values, dtype="<f4").view(np.uint8)
    shuffled = planes.reshape(-1, 4).T.tobytes()
    return bytes([SHUFFLE_ZLIB]) + zlib.compress(shuffled, ZLIB_LEVEL)


def decode_tile(blob: bytes, height: int, width: int, max_iter: int) -> np.ndarray:
    """Decode and check a tile of ``height`` x ``width`` values."""
    if not blob or blob[0] != SHUFFLE_ZLIB:
        tag = blob[0] if blob else None
        raise ProtocolError(f"tile data has codec tag {tag!r}, expected {SHUFFLE_ZLIB}")

    expected = height * width * 4
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(blob[1:], expected + 1)
    except zlib.error as exc:
        raise ProtocolError(f"tile data is not valid zlib: {exc}") from None
    if len(raw) != expected or not inflater.eof or inflater.unused_data:
        raise ProtocolError(
            f"tile data does not hold exactly {height}x{width} float32 values "
            f"({expected} bytes)"
        )

    planes = np.frombuffer(raw, dtype=np.uint8).reshape(4, -1).T
    values = np.ascontiguousarray(planes).view("<f4").reshape(height, width)
    _check_values(values, max_iter)
    return values.astype(np.float32, copy=False)


def _check_values(values: np.ndarray, max_iter: int) -> None:
    escaped = values >= 0
    legal = (values == INTERIOR) | (escaped & (values <= max_iter + 1))
    if not legal.all():
        bad = values[~legal].flat[0]
        raise ProtocolError(
            f"tile value {bad!r} is impossible: values are -1 (interior) or "
            f"smooth counts from 0 to {max_iter + 1}"
        )
