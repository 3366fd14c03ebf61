"""A worker reduced to a blocking socket, for tests that misbehave on purpose.

It speaks the protocol through `fraktal.protocol` when asked to, and sends
any bytes it is given otherwise. Every read has a deadline.
"""

from __future__ import annotations

import contextlib
import socket
import time

from fraktal.protocol.codec import encode_tile
from fraktal.protocol.framing import FrameReader, encode_frame
from fraktal.protocol.messages import (
    MASTER_MESSAGES,
    Assign,
    Error,
    Hello,
    Join,
    Message,
    Result,
    TileData,
    Welcome,
    decode,
    encode,
)
from fraktal.protocol.session import join_mac
from fraktal.render.compute import compute_rect
from fraktal.render.tiles import TileGrid

MAX_MESSAGES = 1000


class Closed(Exception):
    """The master closed the connection."""


class RawClient:
    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout
        self._reader = FrameReader()
        self._messages: list[Message] = []

    def send(self, data: bytes) -> None:
        """Send ``data``; a master that hung up in the middle is not an error."""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.sock.sendall(data)

    def send_message(self, message: Message) -> None:
        self.send(encode_frame(encode(message)))

    def read(self, timeout: float | None = None) -> Message:
        """The next message from the master; `Closed` if it hung up first."""
        timeout = self.timeout if timeout is None else timeout
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while not self._messages:
            if time.monotonic() > deadline:
                raise TimeoutError("the master sent nothing in time")
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                raise Closed()
            self._reader.feed(data)
            self._messages += [
                decode(body, MASTER_MESSAGES) for body in self._reader.frames()
            ]
        return self._messages.pop(0)

    def read_until(self, kind: type[Message], timeout: float | None = None) -> Message:
        for _ in range(MAX_MESSAGES):
            if isinstance(message := self.read(timeout), kind):
                return message
        raise AssertionError(f"no {kind.TYPE} among {MAX_MESSAGES} messages")

    def hello(self) -> Hello:
        hello = self.read()
        assert isinstance(hello, Hello), hello
        return hello

    def join(self, token: str | None, name: str = "raw", processes: int = 1) -> str:
        """Prove the token and join; returns the worker id the master gave."""
        hello = self.hello()
        mac = join_mac(token, hello.nonce, name) if token else b""
        self.send_message(Join(name, "rawhost", processes, mac))
        welcome = self.read()
        assert isinstance(welcome, Welcome), welcome
        return welcome.worker_id

    def error_then_close(self) -> str:
        """Read up to the master's error frame, check it then hangs up."""
        try:
            error = self.read_until(Error)
        except Closed:
            raise AssertionError("the master closed without an error frame") from None
        try:
            for _ in range(MAX_MESSAGES):
                self.read()
        except Closed:
            return error.message
        raise AssertionError("the master kept talking after its error frame")

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def computed_result(assign: Assign) -> Result:
    """The honest result of a chunk, computed here."""
    grid = TileGrid(
        assign.spec.view.width, assign.spec.view.height, assign.spec.tile_size
    )
    done = []
    for tile in assign.tiles:
        values, _ = compute_rect(assign.spec, grid.rect(tile))
        done.append(TileData(tile, encode_tile(values)))
    return Result(assign.chunk, tuple(done), (), 0.01, 1)
