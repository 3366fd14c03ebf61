"""Length-prefixed frames: a 4-byte big-endian body length, then the body.

`FrameReader` is fed whatever bytes the socket produced and yields whole
frame bodies. It refuses a frame whose length prefix exceeds the limit as
soon as the 4 header bytes are in, so a hostile prefix of 4 GiB never makes
anyone allocate 4 GiB.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from fraktal.errors import FrameTooLarge, ProtocolError

HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME = 64 * 1024 * 1024


def encode_frame(body: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Prefix ``body`` with its length."""
    if not 0 < len(body) <= max_frame:
        raise ValueError(f"frame body of {len(body)} bytes is outside 1..{max_frame}")
    return HEADER.pack(len(body)) + body


class FrameReader:
    """Reassembles frames from a byte stream cut at arbitrary places."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._expected: int | None = None

    def feed(self, data: bytes) -> None:
        """Append bytes from the stream; raise at once on a refused prefix."""
        self._buffer += data
        self._read_header()

    def frames(self) -> Iterator[bytes]:
        """Yield every complete frame body buffered so far.

        The next frame's length prefix is checked only after the consumer is
        done with the previous frame, so a limit it changes (see
        `fraktal.protocol.session`) applies from the very next frame.
        """
        while True:
            self._read_header()
            if self._expected is None or len(self._buffer) < self._expected:
                return
            body = bytes(self._buffer[: self._expected])
            del self._buffer[: self._expected]
            self._expected = None
            yield body

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame, its prefix included."""
        prefix = HEADER.size if self._expected is not None else 0
        return prefix + len(self._buffer)

    def _read_header(self) -> None:
        if self._expected is not None or len(self._buffer) < HEADER.size:
            return
        (length,) = HEADER.unpack_from(self._buffer)
        if length > self.max_frame:
            raise FrameTooLarge(
                f"frame length prefix {length} exceeds the limit of "
                f"{self.max_frame} bytes"
            )
        if length == 0:
            raise ProtocolError("frame length prefix is 0; frames carry 1 byte or more")
        del self._buffer[: HEADER.size]
        self._expected = length
