"""Both ends of one worker connection as state machines that do no I/O.

The socket code feeds received bytes in and sends out whatever bytes the
session hands back. A session checks the order of messages as well as their
content:

    master:  hello sent -> AWAIT_JOIN --join, token proven--> ACTIVE
    worker:  AWAIT_HELLO --hello, join sent--> AWAIT_WELCOME --welcome--> ACTIVE

Authentication is a challenge-response: the master's `Hello` carries a fresh
random nonce and the worker answers with HMAC-SHA256(token, nonce and its
name). The token never crosses the wire, and an answer recorded on one
connection is worthless on the next, whose nonce differs.

Until the handshake is over, frames are limited to `HANDSHAKE_MAX_FRAME`
bytes: a peer that has proven nothing can make the other side buffer no more
than that, however many connections it opens. The full limit (tile data can
be large) applies from the first frame after the handshake.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os

from fraktal.errors import AuthenticationError, ProtocolError
from fraktal.protocol.framing import DEFAULT_MAX_FRAME, FrameReader, encode_frame
from fraktal.protocol.messages import (
    MASTER_MESSAGES,
    NONCE_BYTES,
    WORKER_MESSAGES,
    Error,
    Hello,
    Join,
    Message,
    Welcome,
    decode,
    encode,
)

HANDSHAKE_MAX_FRAME = 8192


class State(enum.Enum):
    AWAIT_HELLO = "await hello"
    AWAIT_JOIN = "await join"
    AWAIT_WELCOME = "await welcome"
    ACTIVE = "active"
    CLOSED = "closed"


def join_mac(token: str, nonce: bytes, name: str) -> bytes:
    """The proof that a worker named ``name`` knows ``token``."""
    text = b"fraktal-join\x00" + nonce + name.encode("utf-8")
    return hmac.new(token.encode("utf-8"), text, hashlib.sha256).digest()


class _Session:
    def __init__(self, accepts: dict[str, type[Message]], max_frame: int) -> None:
        self._accepts = accepts
        self._reader = FrameReader(min(max_frame, HANDSHAKE_MAX_FRAME))
        self.max_frame = max_frame
        self.state = State.CLOSED

    def _activate(self) -> None:
        self.state = State.ACTIVE
        self._reader.max_frame = self.max_frame

    def send(self, message: Message) -> bytes:
        """The bytes that carry ``message``."""
        return encode_frame(encode(message), self.max_frame)

    def receive(self, data: bytes) -> list[Message]:
        """Messages completed by ``data``, checked; raise `ProtocolError`."""
        if self.state is State.CLOSED:
            raise ProtocolError("data arrived after the connection was closed")
        self._reader.feed(data)
        messages: list[Message] = []
        for body in self._reader.frames():
            message = decode(body, self._accepts)
            if isinstance(message, Error):
                self.state = State.CLOSED
                messages.append(message)
                break
            messages.extend(self._advance(message))
        return messages

    @property
    def buffered(self) -> int:
        """Bytes received that do not make a whole frame yet."""
        return self._reader.buffered

    def _advance(self, message: Message) -> list[Message]:
        raise NotImplementedError

    def _unexpected(self, message: Message) -> ProtocolError:
        return ProtocolError(
            f"{message.TYPE} message is not allowed in state {self.state.value!r}"
        )


class MasterSession(_Session):
    """The master's end: sends `Hello`, authenticates `Join`, then relays."""

    def __init__(
        self,
        token: str | None,
        max_frame: int = DEFAULT_MAX_FRAME,
        nonce: bytes | None = None,
    ) -> None:
        super().__init__(WORKER_MESSAGES, max_frame)
        self.token = token
        self.nonce = nonce if nonce is not None else os.urandom(NONCE_BYTES)
        self.state = State.AWAIT_JOIN

    def hello(self) -> bytes:
        """The first frame the master sends on a new connection."""
        return self.send(Hello(self.nonce, self.token is not None))

    def _advance(self, message: Message) -> list[Message]:
        if self.state is State.AWAIT_JOIN and isinstance(message, Join):
            self._authenticate(message)
            self._activate()
            return [message]
        if self.state is State.ACTIVE and not isinstance(message, Join):
            return [message]
        raise self._unexpected(message)

    def _authenticate(self, join: Join) -> None:
        if self.token is None:
            return
        if not join.mac:
            raise AuthenticationError(
                "this master requires a token; start the worker with --token "
                "or FRAKTAL_TOKEN set to the master's token"
            )
        if not hmac.compare_digest(
            join.mac, join_mac(self.token, self.nonce, join.name)
        ):
            raise AuthenticationError(
                f"worker {join.name!r} did not prove the master's token; check "
                f"that both use the same --token / FRAKTAL_TOKEN"
            )


class WorkerSession(_Session):
    """The worker's end: answers `Hello` with `Join`, waits for `Welcome`."""

    def __init__(
        self,
        token: str | None,
        name: str,
        host: str,
        processes: int,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        super().__init__(MASTER_MESSAGES, max_frame)
        self.token = token
        self.name, self.host, self.processes = name, host, processes
        self.state = State.AWAIT_HELLO
        self._outbox = bytearray()

    def data_to_send(self) -> bytes:
        """Bytes the session produced on its own (the `Join`), to be sent."""
        data, self._outbox = bytes(self._outbox), bytearray()
        return data

    def _advance(self, message: Message) -> list[Message]:
        if self.state is State.AWAIT_HELLO and isinstance(message, Hello):
            self._outbox += self.send(self._join(message))
            self.state = State.AWAIT_WELCOME
            return []
        if self.state is State.AWAIT_WELCOME and isinstance(message, Welcome):
            self._activate()
            return [message]
        if self.state is State.ACTIVE and not isinstance(message, (Hello, Welcome)):
            return [message]
        raise self._unexpected(message)

    def _join(self, hello: Hello) -> Join:
        if hello.auth_required and self.token is None:
            raise AuthenticationError(
                "the master requires a token; start the worker with --token or "
                "FRAKTAL_TOKEN set to the master's token"
            )
        mac = join_mac(self.token, hello.nonce, self.name) if self.token else b""
        return Join(self.name, self.host, self.processes, mac)
