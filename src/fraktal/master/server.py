"""One worker connection on the master: handshake, then messages until it ends.

Bytes go through the connection's `MasterSession`, which refuses anything
malformed. Any `ProtocolError` is answered with an error frame and ends this
connection only; the worker's leased tiles go back to the queue at once. A
peer that closes in the middle of a frame gets an error frame too (it may
only have shut down its sending side), and the partial frame is discarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fraktal.errors import AuthenticationError, ProtocolError
from fraktal.master.scheduler import WorkerStatus
from fraktal.protocol.messages import MAX_TEXT, Error, Join, Message, Welcome
from fraktal.protocol.session import MasterSession

if TYPE_CHECKING:
    from fraktal.master.service import Master

logger = logging.getLogger(__name__)

READ_BYTES = 256 * 1024


@dataclass
class Connection:
    """A worker's live connection, as the dispatcher sees it."""

    worker_id: str
    session: MasterSession
    writer: asyncio.StreamWriter
    held_jobs: set[str] = field(default_factory=set)
    leaving: bool = False

    def send(self, message: Message) -> None:
        self.writer.write(self.session.send(message))


async def handle_connection(
    master: Master, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Serve one TCP connection from a (would-be) worker until it closes."""
    peer = _peer(writer)
    if not master.accept_connection():
        logger.warning(
            "%s: refused, %d connections already open",
            peer,
            master.config.max_connections,
        )
        writer.close()
        return
    session = MasterSession(master.config.token, master.config.max_frame)
    connection: Connection | None = None
    status, reason = WorkerStatus.LOST, "connection closed without a goodbye"
    try:
        writer.write(session.hello())
        join = await asyncio.wait_for(
            _read_join(reader, session), master.config.handshake_seconds
        )
        connection = master.join(session, writer, join.name, peer, join.processes)
        writer.write(
            session.send(Welcome(connection.worker_id, master.config.heartbeat_seconds))
        )
        master.dispatch(connection)
        status, reason = await _serve(master, connection, reader)
    except AuthenticationError as exc:
        logger.warning("%s: refused: %s", peer, exc)
        _say_goodbye(writer, session, str(exc))
        status, reason = WorkerStatus.DISCONNECTED, str(exc)
    except ProtocolError as exc:
        who = f"worker {connection.worker_id}" if connection else peer
        logger.warning("%s: bad frame, closing: %s", who, exc)
        _say_goodbye(writer, session, str(exc))
        status, reason = WorkerStatus.DISCONNECTED, f"protocol error: {exc}"
    except asyncio.TimeoutError:  # not the builtin before Python 3.11
        logger.warning(
            "%s: no join within %.0f s, closing", peer, master.config.handshake_seconds
        )
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        # A reset can follow the first half of a frame as well as an EOF can.
        reason = (
            _cut_short(session)
            if session.buffered
            else f"connection lost: {exc.__class__.__name__}"
        )
    except asyncio.CancelledError:
        # Only Master.stop cancels a handler. Ending normally rather than
        # cancelled keeps asyncio's stream callback from logging a traceback.
        status, reason = WorkerStatus.DISCONNECTED, "the master stopped"
    except Exception:
        who = f"worker {connection.worker_id}" if connection else peer
        logger.exception("%s: closing after an internal error", who)
        _say_goodbye(writer, session, "internal error in the master; see its log")
        status, reason = WorkerStatus.DISCONNECTED, "internal error in the master"
    finally:
        master.connection_closed()
        if connection is not None:
            master.leave(connection, status, reason)
        writer.close()


async def _read_join(reader: asyncio.StreamReader, session: MasterSession) -> Join:
    while True:
        data = await reader.read(READ_BYTES)
        if not data and session.buffered:
            raise ProtocolError(_cut_short(session))
        if not data:
            raise ConnectionResetError("closed before joining")
        for message in session.receive(data):
            if isinstance(message, Join):
                return message
            raise ProtocolError(f"worker sent {message.TYPE} before joining")


async def _serve(
    master: Master, connection: Connection, reader: asyncio.StreamReader
) -> tuple[WorkerStatus, str]:
    while True:
        data = await reader.read(READ_BYTES)
        if not data and connection.session.buffered:
            reason = _cut_short(connection.session)
            _say_goodbye(connection.writer, connection.session, reason)
            return WorkerStatus.LOST, reason
        if not data and connection.leaving:
            return WorkerStatus.LEFT, "handed its chunks back and left"
        if not data:
            return WorkerStatus.LOST, "connection closed without a goodbye"
        for message in connection.session.receive(data):
            if isinstance(message, Error):
                return WorkerStatus.DISCONNECTED, f"worker error: {message.message}"
            await master.handle(connection, message)
        await connection.writer.drain()


def _cut_short(session: MasterSession) -> str:
    return (
        f"connection closed in the middle of a frame; the {session.buffered} "
        f"bytes of it were discarded"
    )


def _say_goodbye(
    writer: asyncio.StreamWriter, session: MasterSession, text: str
) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError):
        writer.write(session.send(Error(text[:MAX_TEXT])))


def _peer(writer: asyncio.StreamWriter) -> str:
    address = writer.get_extra_info("peername")
    return str(address[0]) if address else "unknown peer"
